//! The meter's schedule: one task ticks every `tick_interval` (at most one
//! batch in flight), fires the earliest exhaustion at its instant, and tells
//! sessions when the database has been gone longer than the grace; a second
//! task reaps other workers' orphans and expired cards. Warnings, snapshots
//! and the exhaustion timer are recomputed here whenever a user's sessions
//! or money change.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::batch::write_batch;
use super::state::{self, Live};
use super::{Channels, Inner, MeterEvent, Snapshot, State};
use crate::cards;
use crate::ids::{SessionId, UserId};
use crate::money::Millis;

/// Recomputes a user's snapshots, warnings and exhaustion schedule.
pub(super) fn refresh_user(inner: &Inner, st: &mut State, user: UserId, now: Instant) {
    let Some(account) = st.accounts.get(&user).copied() else { return };
    let ids: Vec<SessionId> = st.by_user.get(&user).cloned().unwrap_or_default();
    if ids.is_empty() {
        st.accounts.remove(&user);
        st.exhaustions.remove(&user);
        return;
    }
    let pairs: Vec<(SessionId, &Live)> = ids.iter().map(|id| (*id, &st.sessions[id])).collect();
    let remaining = state::remaining_ms(account, &pairs, now);
    match state::exhaustion(account, &pairs, now) {
        Some(ex) => st.exhaustions.insert(user, ex),
        None => st.exhaustions.remove(&user),
    };
    let thresholds = inner.thresholds_ms();
    for id in ids {
        let (Some(l), Some(ch)) = (st.sessions.get_mut(&id), st.channels.get(&id)) else { continue };
        let rem = if l.clock.running() { remaining } else { None };
        if let Some(r) = rem.filter(|_| l.exhausted.is_none()) {
            let (due, rearmed) = state::due_warnings(l, r, &thresholds);
            let remaining = Duration::from_millis(r.max(0) as u64);
            for _ in due {
                send(ch, MeterEvent::Warning { remaining });
            }
            if rearmed {
                send(ch, MeterEvent::Extended { remaining });
            }
        }
        let snap = Snapshot {
            remaining: rem.map(|r| Duration::from_millis(r.max(0) as u64)),
            spendable: account.funds.for_session(l.ad_supported),
            earned: if l.ad_supported { account.funds.earned } else { Millis::ZERO },
            live: Duration::from_millis(l.clock.live_ms(now) as u64),
            exhausted: l.exhausted.is_some(),
        };
        ch.snapshot.send_replace(snap);
    }
}

pub(super) fn send(ch: &Channels, ev: MeterEvent) {
    if let Err(e) = ch.events.try_send(ev) {
        warn!(error = %e, "meter event not delivered: the session's event queue is full or closed");
    }
}

/// Fires every exhaustion due at `now`.
fn fire_exhaustions(inner: &Inner, st: &mut State, now: Instant) {
    let due: Vec<UserId> = st.exhaustions.iter().filter(|(_, ex)| ex.at <= now).map(|(u, _)| *u).collect();
    for user in due {
        let Some(ex) = st.exhaustions.remove(&user) else { continue };
        let Some(account) = st.accounts.get(&user).copied() else { continue };
        let ids = st.by_user.get(&user).cloned().unwrap_or_default();
        state::exhaust(&ids, account, &ex, &mut st.sessions, now);
        for (id, _) in &ex.stops {
            if let Some(ch) = st.channels.get(id) {
                info!(session = %id, %user, "balance exhausted");
                send(ch, MeterEvent::Exhausted);
            }
        }
        st.flush = true;
        refresh_user(inner, st, user, now);
    }
}

pub(super) async fn run(inner: Arc<Inner>, cancel: CancellationToken) {
    let mut interval = tokio::time::interval(inner.config.tick_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut inflight: Option<JoinHandle<()>> = None;
    loop {
        let next = inner.lock().exhaustions.values().map(|e| e.at).min();
        let start_write;
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = interval.tick() => {
                let mut st = inner.lock();
                check_db_grace(&inner, &mut st);
                start_write = true;
            }
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let mut st = inner.lock();
                fire_exhaustions(&inner, &mut st, Instant::now());
                start_write = st.flush;
            }
            _ = inner.changed.notified() => start_write = inner.lock().flush,
            _ = async { inflight.as_mut().expect("guarded").await }, if inflight.is_some() => {
                inflight = None;
                start_write = inner.lock().flush;
            }
        }
        if start_write && inflight.is_none() {
            inflight = Some(tokio::spawn(write_batch(inner.clone())));
        }
    }
    if let Some(t) = inflight {
        let _ = t.await;
    }
    write_batch(inner).await;
}

fn check_db_grace(inner: &Inner, st: &mut State) {
    let Some(since) = st.db_down_since else { return };
    if since.elapsed() < inner.config.db_grace {
        return;
    }
    for ch in st.channels.values_mut().filter(|c| !c.told_db_lost && c.closing.is_none()) {
        ch.told_db_lost = true;
        send(ch, MeterEvent::DatabaseUnavailable);
    }
}

pub(super) async fn reap(inner: Arc<Inner>, cancel: CancellationToken) {
    let mut interval = tokio::time::interval(inner.config.reap_interval);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = interval.tick() => {}
        }
        match inner.store.reap_orphans(inner.config.heartbeat_timeout, &inner.config.worker_id).await {
            Ok(ids) if !ids.is_empty() => {
                metrics::counter!("mindbot_sessions_orphaned_total").increment(ids.len() as u64);
                info!(count = ids.len(), "closed orphaned sessions from their heartbeat");
                // Nobody listening is fine: the sessions are closed either way.
                let _ = inner.reaped.send(ids);
            }
            Ok(_) => {}
            Err(e) => debug!(error = %e, "orphan reaping failed; will retry"),
        }
        if let Err(e) = cards::expire_due(inner.store.pool()).await {
            debug!(error = %e, "card expiry failed; will retry");
        }
    }
}
