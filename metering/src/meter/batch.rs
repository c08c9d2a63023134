//! One tick batch's write, in its steps: [`collect`] every session's entry,
//! [`charge`] them in one transaction (timing recorded), [`acknowledge`] the
//! outcome in memory (balances, shortfalls, sessions closed elsewhere) and
//! pick the closes that are settled, then [`close_settled`] writes those and
//! answers their owners. A failed write keeps every charge in memory for the
//! next batch.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::scheduler::{refresh_user, send};
use super::state::{Account, Live};
use super::{Inner, MeterEvent, State};
use crate::error::{Error, Result};
use crate::ids::{SessionId, UserId};
use crate::money::Millis;
use crate::records::VoiceSession;
use crate::session::EndReason;
use crate::store::{CloseSession, TickEntry, TickOutcome, TickResult};

/// Writes one batch: every session's entry (a heartbeat at least), then the
/// closes that are settled.
pub(super) async fn write_batch(inner: Arc<Inner>) {
    let now = Instant::now();
    let entries = collect(&inner, now);
    if entries.is_empty() {
        return;
    }
    let Some(outcome) = charge(&inner, &entries, now).await else { return };
    let to_close = acknowledge(&inner, &entries, &outcome);
    if to_close.is_empty() {
        return;
    }
    close_settled(&inner, &to_close).await;
}

/// Takes every session's next entry (what it owes since the last write, or a
/// heartbeat) and clears the flush request this batch answers.
fn collect(inner: &Inner, now: Instant) -> Vec<TickEntry> {
    let mut st = inner.lock();
    st.flush = false;
    let ids: Vec<SessionId> = st.sessions.keys().copied().collect();
    ids.into_iter().filter_map(|id| st.sessions.get_mut(&id).map(|l| l.next_entry(id, now))).collect()
}

/// Writes the entries in one transaction, within the write timeout. `None`
/// when nothing was written: a concurrent change (retried at once) or a
/// failure (the database is counted down since `now`).
async fn charge(inner: &Inner, entries: &[TickEntry], now: Instant) -> Option<TickOutcome> {
    let started = Instant::now();
    let written = tokio::time::timeout(inner.config.write_timeout, inner.store.apply_ticks(entries)).await;
    let took = started.elapsed();
    match written {
        Ok(Ok(outcome)) => {
            record_timing(inner, entries.len(), took);
            Some(outcome)
        }
        Ok(Err(Error::ConcurrentChange)) => {
            // Not an outage: a session was closed elsewhere mid-batch. The
            // next batch sees it closed and carries the rest.
            inner.stats.lock().unwrap_or_else(|p| p.into_inner()).failures += 1;
            debug!("tick batch rolled back: a session changed meanwhile; retrying");
            inner.lock().flush = true;
            None
        }
        Ok(Err(e)) => {
            write_failed(inner, &e.to_string(), now);
            None
        }
        Err(_) => {
            write_failed(inner, "timed out", now);
            None
        }
    }
}

/// Counts a written batch and its duration, for the benchmark and metrics.
fn record_timing(inner: &Inner, size: usize, took: Duration) {
    {
        let mut stats = inner.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.batches += 1;
        stats.last_batch_size = size;
        if stats.durations_us.len() >= 1_000_000 {
            stats.durations_us.clear();
        }
        stats.durations_us.push(took.as_micros().min(u32::MAX as u128) as u32);
    }
    metrics::histogram!("mindbot_meter_tick_duration_seconds").record(took.as_secs_f64());
}

/// A batch failed or timed out: its charges stay in memory for the next one;
/// the first failure marks the database down (the grace runs from `now`).
fn write_failed(inner: &Inner, why: &str, now: Instant) {
    inner.stats.lock().unwrap_or_else(|p| p.into_inner()).failures += 1;
    metrics::counter!("mindbot_meter_write_failures_total").increment(1);
    let mut st = inner.lock();
    if st.db_down_since.is_none() {
        warn!(error = why, "tick batch not written; charges kept in memory and retried");
        st.db_down_since = Some(now);
    }
    st.flush = false;
}

/// Takes a written batch's outcome into memory: the database is up, the
/// users' balances are the durable ones, each session learns what was
/// applied; then every touched user is recomputed. Returns the closes now
/// settled.
fn acknowledge(inner: &Inner, entries: &[TickEntry], outcome: &TickOutcome) -> Vec<CloseSession> {
    let mut guard = inner.lock();
    let st = &mut *guard;
    if st.db_down_since.take().is_some() {
        info!("database writes succeed again; kept charges written");
    }
    let now = Instant::now();
    for (user, funds) in &outcome.balances {
        st.accounts.insert(*user, Account { funds: *funds });
    }
    let mut users: Vec<UserId> = entries
        .iter()
        .zip(&outcome.results)
        .filter_map(|(entry, (id, result))| acknowledge_entry(inner, st, entry, *id, result, now))
        .collect();
    users.sort();
    users.dedup();
    for u in users {
        refresh_user(inner, st, u, now);
    }
    settled_closes(st, now)
}

/// Takes one entry's result into its session; returns the session's user,
/// `None` when the session is no longer here.
fn acknowledge_entry(
    inner: &Inner,
    st: &mut State,
    entry: &TickEntry,
    id: SessionId,
    result: &TickResult,
    now: Instant,
) -> Option<UserId> {
    let l = st.sessions.get_mut(&id)?;
    let short = l.acknowledge(entry, result);
    let user = l.user;
    if short.is_positive() && l.exhausted.is_none() {
        // Another session of this user (elsewhere) spent the balance first:
        // what could not be paid is not charged.
        stop_unpaid(l, now);
        if let Some(ch) = st.channels.get(&id) {
            send(ch, MeterEvent::Exhausted);
        }
    }
    if matches!(result, TickResult::Closed | TickResult::OutOfOrder { .. }) {
        warn!(session = %id, ?result, "tick not applied; the session was closed elsewhere");
        closed_elsewhere(inner, st, id, now);
    }
    Some(user)
}

/// Stops a session's clock now, exhausted with nothing left to charge.
fn stop_unpaid(l: &mut Live, now: Instant) {
    let at = l.clock.live_ms(now);
    l.clock.stop_at(at);
    l.exhausted = Some(Millis::ZERO);
    l.final_sent = true;
}

/// The database refused a session's ticks because someone else closed it:
/// tell its owner (once), stop its clock, and close it here without writing
/// anything more for it.
fn closed_elsewhere(inner: &Inner, st: &mut State, id: SessionId, now: Instant) {
    if let Some(ch) = st.channels.get_mut(&id) {
        if ch.closing.is_none() {
            send(ch, MeterEvent::ClosedElsewhere);
        }
        ch.elsewhere = true;
        ch.closing.get_or_insert((EndReason::Error, inner.config.clock.now()));
    }
    if let Some(l) = st.sessions.get_mut(&id) {
        l.unacked = None;
        l.closing = true;
        l.clock.pause(now);
    }
}

/// The closing sessions whose charges are all written (or that were closed
/// elsewhere, so nothing more can be).
fn settled_closes(st: &State, now: Instant) -> Vec<CloseSession> {
    let mut to_close = Vec::new();
    for (id, ch) in &st.channels {
        if let (Some((reason, end)), Some(l)) = (ch.closing, st.sessions.get(id)) {
            if l.settled(now) || ch.elsewhere {
                // Within the column's bound by construction; clamped so a slip
                // could never make the close fail and retry forever.
                let forgiven_ms = l.forgiven_ms.clamp(0, super::state::FORGIVE_LIMIT.as_millis() as i64);
                to_close.push(CloseSession { session: *id, reason, end_time: end, forgiven_ms });
            }
        }
    }
    to_close
}

/// Closes the settled sessions in one transaction; on failure they stay
/// closing and are retried with the next batch.
async fn close_settled(inner: &Inner, to_close: &[CloseSession]) {
    match inner.store.close_many(to_close).await {
        Ok(closed) => forget_closed(inner, closed),
        Err(e) => {
            // Kept in the closing state; retried with the next batch.
            debug!(error = %e, count = to_close.len(), "closing sessions failed; will retry");
        }
    }
}

/// Drops closed sessions from memory, answers whoever waits on their close,
/// and recomputes their users.
fn forget_closed(inner: &Inner, closed: Vec<(SessionId, Result<VoiceSession>)>) {
    let mut st = inner.lock();
    let mut users = Vec::new();
    for (id, r) in closed {
        if let Some(l) = st.sessions.remove(&id) {
            if let Some(ids) = st.by_user.get_mut(&l.user) {
                ids.retain(|s| *s != id);
                if ids.is_empty() {
                    st.by_user.remove(&l.user);
                }
            }
            users.push(l.user);
        }
        if let Some(ch) = st.channels.remove(&id) {
            for reply in ch.replies {
                let _ = reply.send(match &r {
                    Ok(v) => Ok(v.clone()),
                    Err(_) => Err(Error::SessionClosed { session: id }),
                });
            }
        }
        match &r {
            Ok(v) => debug!(session = %id, reason = ?v.status, cost_minutes = ?v.cost_minutes, "session closed"),
            Err(e) => warn!(session = %id, error = %e, "session close failed"),
        }
    }
    users.sort();
    users.dedup();
    for u in users {
        refresh_user(inner, &mut st, u, Instant::now());
    }
}
