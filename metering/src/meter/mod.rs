//! The meter: every live session of this worker, charged every second in one
//! batch, with warnings, exhaustion at the exact instant, and writes that
//! survive a database outage.
//!
//! A caller [`Meter::open`]s a session once the user and the agent are both
//! in the room, [`MeteredSession::pause`]s and resumes it as the user drops
//! out and returns, reads [`MeterEvent`]s, and [`MeteredSession::close`]s it
//! with a reason. Hanging up is the caller's job; the meter only says when.
//!
//! One task owns the schedule: a tick each `tick_interval` sends one batch
//! (at most one in flight), a timer fires the earliest exhaustion, and a
//! reaper closes other workers' orphaned sessions. No lock is held across an
//! await: the state is taken, an entry list built, the lock dropped, then the
//! batch is written.

pub mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::balance;
use crate::cards;
use crate::error::{Error, Result};
use crate::ids::{SessionId, UserId};
use crate::money::Millis;
use crate::records::VoiceSession;
use crate::session::{EndReason, OpenRules, OpenSession};
use crate::store::{CloseSession, Store, TickEntry, TickResult};
use state::{Account, Exhaustion, Live};

/// Meter settings; see `config.toml` for each default's reason.
#[derive(Debug, Clone)]
pub struct MeterConfig {
    /// How often a batch of ticks is written.
    pub tick_interval: Duration,
    /// Remaining times at which a session is warned, e.g. 60 s and 10 s.
    pub warnings: Vec<Duration>,
    /// How long sessions go on while the database cannot be written.
    pub db_grace: Duration,
    /// How long one batch write may take before it counts as failed.
    pub write_timeout: Duration,
    /// A session whose heartbeat is older than this is an orphan.
    pub heartbeat_timeout: Duration,
    /// How often this worker looks for orphans and expired cards.
    pub reap_interval: Duration,
    /// Written to `voice_sessions.worker_id`.
    pub worker_id: String,
    /// This worker's wall clock, for the times it records (a session's start
    /// and end). Nothing compared between workers reads it: heartbeats,
    /// orphan reaping and card expiry use the database's clock.
    pub clock: Clock,
}

/// A worker's wall clock: the system's, or (in tests) one running ahead or
/// behind it, to show that nothing shared depends on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    offset_ms: i64,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// The system clock shifted by `offset` (positive: ahead).
    pub fn skewed(offset: chrono::Duration) -> Clock {
        Clock { offset_ms: offset.num_milliseconds() }
    }

    pub fn now(&self) -> chrono::DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.offset_ms)
    }
}

impl Default for MeterConfig {
    fn default() -> Self {
        MeterConfig {
            tick_interval: Duration::from_secs(1),
            warnings: vec![Duration::from_secs(60), Duration::from_secs(10)],
            db_grace: Duration::from_secs(30),
            write_timeout: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(60),
            reap_interval: Duration::from_secs(10),
            worker_id: "mindbot-agent".into(),
            clock: Clock::system(),
        }
    }
}

/// What the meter tells a session's owner.
#[derive(Debug, Clone, PartialEq)]
pub enum MeterEvent {
    /// Remaining time fell to a warning threshold.
    Warning { remaining: Duration },
    /// The balance grew (a card was activated) after a warning.
    Extended { remaining: Duration },
    /// The balance is spent: hang up now. Charging has stopped.
    Exhausted,
    /// The database has been unreachable longer than the grace: end the
    /// session (reason `db_unavailable`); its charges are kept and written
    /// once the database returns.
    DatabaseUnavailable,
    /// The session was closed by someone else (orphan reaper, room webhook).
    ClosedElsewhere,
}

/// A session's money at a glance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Live time the balance still pays for; `None` while paused.
    pub remaining: Option<Duration>,
    /// What the user can spend on this session at the last durable write
    /// (paid cards, plus earned ones on an ad-supported persona).
    pub spendable: Millis,
    /// The earned (rewarded-ad) part of `spendable`: spent first.
    pub earned: Millis,
    pub live: Duration,
    pub exhausted: bool,
}

/// Batch write timings, for the benchmark and metrics.
#[derive(Debug, Clone, Default)]
pub struct TickStats {
    pub batches: u64,
    pub failures: u64,
    /// Duration of each successful batch write, in microseconds (the most
    /// recent million).
    pub durations_us: Vec<u32>,
    pub last_batch_size: usize,
}

struct Channels {
    events: mpsc::Sender<MeterEvent>,
    snapshot: watch::Sender<Snapshot>,
    closing: Option<(EndReason, chrono::DateTime<Utc>)>,
    replies: Vec<oneshot::Sender<Result<VoiceSession>>>,
    told_db_lost: bool,
    /// Closed by someone else: nothing more can be written for it.
    elsewhere: bool,
}

#[derive(Default)]
struct State {
    sessions: HashMap<SessionId, Live>,
    channels: HashMap<SessionId, Channels>,
    accounts: HashMap<UserId, Account>,
    /// Each user's sessions here, so per-user work never scans every session.
    by_user: HashMap<UserId, Vec<SessionId>>,
    exhaustions: HashMap<UserId, Exhaustion>,
    db_down_since: Option<Instant>,
    flush: bool,
}

struct Inner {
    store: Store,
    config: MeterConfig,
    state: Mutex<State>,
    changed: Notify,
    stats: Mutex<TickStats>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn thresholds_ms(&self) -> Vec<i64> {
        self.config.warnings.iter().map(|d| d.as_millis() as i64).collect()
    }
}

/// The per-worker meter. Cheap to share behind an `Arc`.
pub struct Meter {
    inner: Arc<Inner>,
    cancel: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Meter {
    /// Starts the meter's schedule and reaper on the current runtime.
    pub fn start(pool: PgPool, config: MeterConfig) -> Meter {
        let inner = Arc::new(Inner {
            store: Store::new(pool),
            config,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            stats: Mutex::new(TickStats::default()),
        });
        let cancel = CancellationToken::new();
        let tasks =
            vec![tokio::spawn(run(inner.clone(), cancel.clone())), tokio::spawn(reap(inner.clone(), cancel.clone()))];
        Meter { inner, cancel, tasks: Mutex::new(tasks) }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Sessions this meter is metering (closing ones included).
    pub fn live_sessions(&self) -> usize {
        self.inner.lock().sessions.len()
    }

    pub fn stats(&self) -> TickStats {
        self.inner.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Authorises and opens a metered session; its clock runs from now.
    /// Refused with [`Error::InsufficientBalance`] below one second.
    /// Refused with [`Error::DuplicateSession`] while a session is active
    /// for the same job or (room, user): no second meter, nothing charged.
    pub async fn open(&self, spec: OpenSession) -> Result<MeteredSession> {
        self.open_with(spec, OpenRules::default()).await
    }

    /// [`open`](Self::open) under `rules` (see [`OpenRules`]).
    pub async fn open_with(&self, mut spec: OpenSession, rules: OpenRules) -> Result<MeteredSession> {
        // The row names this meter's worker, so its own reaper leaves it alone.
        spec.worker_id.clone_from(&self.inner.config.worker_id);
        let auth = balance::authorize_for(self.inner.store.pool(), spec.user, spec.rate, spec.ad_supported).await?;
        let id = self.inner.store.open_with(&spec, rules, self.inner.config.clock.now()).await?;
        let (events_tx, events_rx) = mpsc::channel(32);
        let (snap_tx, snap_rx) = watch::channel(Snapshot {
            spendable: auth.funds.for_session(spec.ad_supported),
            earned: if spec.ad_supported { auth.funds.earned } else { Millis::ZERO },
            ..Snapshot::default()
        });
        {
            let mut st = self.inner.lock();
            let now = Instant::now();
            let mut live = Live::new(spec.user, spec.rate, now);
            live.ad_supported = spec.ad_supported;
            st.sessions.insert(id, live);
            st.by_user.entry(spec.user).or_default().push(id);
            st.channels.insert(
                id,
                Channels {
                    events: events_tx,
                    snapshot: snap_tx,
                    closing: None,
                    replies: Vec::new(),
                    told_db_lost: false,
                    elsewhere: false,
                },
            );
            // A fresh authorisation is at least as new as what we knew.
            st.accounts.insert(spec.user, Account { funds: auth.funds });
            refresh_user(&self.inner, &mut st, spec.user, now);
        }
        self.inner.changed.notify_one();
        debug!(session = %id, user = %spec.user, rate = %spec.rate, "metered session opened");
        Ok(MeteredSession { id, inner: self.inner.clone(), events: events_rx, snapshot: snap_rx, closed: false })
    }

    /// Stops the schedule after one last write of what is owed.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// One metered session, owned by its caller.
pub struct MeteredSession {
    id: SessionId,
    inner: Arc<Inner>,
    events: mpsc::Receiver<MeterEvent>,
    snapshot: watch::Receiver<Snapshot>,
    closed: bool,
}

impl MeteredSession {
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The user or the agent left: stop charging until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.with_live(|l, now| l.clock.pause(now));
    }

    /// Both are in the room again.
    pub fn resume(&self) {
        self.with_live(|l, now| {
            if l.exhausted.is_none() && !l.closing {
                l.clock.resume(now)
            }
        });
    }

    /// The end is decided: stop charging at this instant, for good, with at
    /// most `cap` of live time (a session limit), before any message, lead
    /// or hang-up retry. [`close`](Self::close) still writes and closes.
    pub fn stop(&self, cap: Option<Duration>) {
        let cap_ms = cap.map(|c| c.as_millis().min(i64::MAX as u128) as i64);
        self.with_live(|l, now| l.stop(now, cap_ms));
    }

    /// Live time so far (what the user is charged for, in arrears).
    pub fn live(&self) -> Duration {
        let st = self.inner.lock();
        let now = Instant::now();
        st.sessions.get(&self.id).map_or(Duration::ZERO, |l| Duration::from_millis(l.clock.live_ms(now).max(0) as u64))
    }

    fn with_live(&self, f: impl FnOnce(&mut Live, Instant)) {
        let mut st = self.inner.lock();
        let now = Instant::now();
        if let Some(l) = st.sessions.get_mut(&self.id) {
            f(l, now);
            let user = l.user;
            refresh_user(&self.inner, &mut st, user, now);
        }
        drop(st);
        self.inner.changed.notify_one();
    }

    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.borrow().clone()
    }

    /// A receiver that sees every snapshot change.
    pub fn watch(&self) -> watch::Receiver<Snapshot> {
        self.snapshot.clone()
    }

    /// The next event; `None` once the meter has stopped.
    pub async fn next_event(&mut self) -> Option<MeterEvent> {
        self.events.recv().await
    }

    /// Ends the session: stops its clock, writes every whole second lived
    /// (and the final remainder if the balance ran out), then closes the
    /// row. Waits until that is durable; if the database is down, the close
    /// stays queued and is written when it returns even if this is dropped.
    pub async fn close(mut self, reason: EndReason) -> Result<VoiceSession> {
        self.closed = true;
        let rx = request_close(&self.inner, self.id, reason);
        rx.await.map_err(|_| Error::MeterStopped)?
    }
}

impl Drop for MeteredSession {
    fn drop(&mut self) {
        if !self.closed {
            warn!(session = %self.id, "metered session dropped without close; closing with reason error");
            drop(request_close(&self.inner, self.id, EndReason::Error));
        }
    }
}

fn request_close(inner: &Arc<Inner>, id: SessionId, reason: EndReason) -> oneshot::Receiver<Result<VoiceSession>> {
    let (tx, rx) = oneshot::channel();
    let mut guard = inner.lock();
    let st = &mut *guard;
    let now = Instant::now();
    match (st.sessions.get_mut(&id), st.channels.get_mut(&id)) {
        (Some(l), Some(ch)) => {
            l.clock.pause(now);
            l.closing = true;
            ch.closing.get_or_insert((reason, inner.config.clock.now()));
            ch.replies.push(tx);
            let user = l.user;
            st.flush = true;
            refresh_user(inner, st, user, now);
        }
        _ => {
            let _ = tx.send(Err(Error::SessionClosed { session: id }));
        }
    }
    drop(guard);
    inner.changed.notify_one();
    rx
}

/// Recomputes a user's snapshots, warnings and exhaustion schedule.
fn refresh_user(inner: &Inner, st: &mut State, user: UserId, now: Instant) {
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

fn send(ch: &Channels, ev: MeterEvent) {
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

async fn run(inner: Arc<Inner>, cancel: CancellationToken) {
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

/// Writes one batch: every session's entry (a heartbeat at least), then the
/// closes that are settled.
async fn write_batch(inner: Arc<Inner>) {
    let now = Instant::now();
    let entries: Vec<TickEntry> = {
        let mut st = inner.lock();
        st.flush = false;
        let ids: Vec<SessionId> = st.sessions.keys().copied().collect();
        ids.into_iter().filter_map(|id| st.sessions.get_mut(&id).map(|l| l.next_entry(id, now))).collect()
    };
    if entries.is_empty() {
        return;
    }
    let started = Instant::now();
    let written = tokio::time::timeout(inner.config.write_timeout, inner.store.apply_ticks(&entries)).await;
    let took = started.elapsed();
    let outcome = match written {
        Ok(Ok(o)) => o,
        Ok(Err(Error::ConcurrentChange)) => {
            // Not an outage: a session was closed elsewhere mid-batch. The
            // next batch sees it closed and carries the rest.
            inner.stats.lock().unwrap_or_else(|p| p.into_inner()).failures += 1;
            debug!("tick batch rolled back: a session changed meanwhile; retrying");
            inner.lock().flush = true;
            return;
        }
        Ok(Err(e)) => return write_failed(&inner, &e.to_string(), now),
        Err(_) => return write_failed(&inner, "timed out", now),
    };
    {
        let mut stats = inner.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.batches += 1;
        stats.last_batch_size = entries.len();
        if stats.durations_us.len() >= 1_000_000 {
            stats.durations_us.clear();
        }
        stats.durations_us.push(took.as_micros().min(u32::MAX as u128) as u32);
    }
    metrics::histogram!("mindbot_meter_tick_duration_seconds").record(took.as_secs_f64());
    let mut to_close = Vec::new();
    {
        let mut guard = inner.lock();
        let st = &mut *guard;
        if st.db_down_since.take().is_some() {
            info!("database writes succeed again; kept charges written");
        }
        let now = Instant::now();
        for (user, funds) in &outcome.balances {
            st.accounts.insert(*user, Account { funds: *funds });
        }
        let mut users = Vec::new();
        for (entry, (id, result)) in entries.iter().zip(&outcome.results) {
            let Some(l) = st.sessions.get_mut(id) else { continue };
            let short = l.acknowledge(entry, result);
            users.push(l.user);
            if short.is_positive() && l.exhausted.is_none() {
                // Another session of this user (elsewhere) spent the balance
                // first: what could not be paid is not charged.
                let at = l.clock.live_ms(now);
                l.clock.stop_at(at);
                l.exhausted = Some(Millis::ZERO);
                l.final_sent = true;
                if let Some(ch) = st.channels.get(id) {
                    send(ch, MeterEvent::Exhausted);
                }
            }
            if matches!(result, TickResult::Closed | TickResult::OutOfOrder { .. }) {
                warn!(session = %id, ?result, "tick not applied; the session was closed elsewhere");
                if let Some(ch) = st.channels.get_mut(id) {
                    if ch.closing.is_none() {
                        send(ch, MeterEvent::ClosedElsewhere);
                    }
                    ch.elsewhere = true;
                    ch.closing.get_or_insert((EndReason::Error, inner.config.clock.now()));
                }
                if let Some(l) = st.sessions.get_mut(id) {
                    l.unacked = None;
                    l.closing = true;
                    l.clock.pause(now);
                }
            }
        }
        users.sort();
        users.dedup();
        for u in users {
            refresh_user(&inner, st, u, now);
        }
        for (id, ch) in &st.channels {
            if let (Some((reason, end)), Some(l)) = (ch.closing, st.sessions.get(id)) {
                if l.settled(now) || ch.elsewhere {
                    to_close.push(CloseSession { session: *id, reason, end_time: end });
                }
            }
        }
    }
    if to_close.is_empty() {
        return;
    }
    let closed = match inner.store.close_many(&to_close).await {
        Ok(c) => c,
        Err(e) => {
            // Kept in the closing state; retried with the next batch.
            debug!(error = %e, count = to_close.len(), "closing sessions failed; will retry");
            return;
        }
    };
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
        refresh_user(&inner, &mut st, u, Instant::now());
    }
}

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

async fn reap(inner: Arc<Inner>, cancel: CancellationToken) {
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
            }
            Ok(_) => {}
            Err(e) => debug!(error = %e, "orphan reaping failed; will retry"),
        }
        if let Err(e) = cards::expire_due(inner.store.pool()).await {
            debug!(error = %e, "card expiry failed; will retry");
        }
    }
}
