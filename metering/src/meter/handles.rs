//! What holds the meter: the worker's [`Meter`] (start, open, shutdown) and
//! each session's [`MeteredSession`] (pause, resume, stop, close). A handle
//! only changes the shared state under its lock and wakes the scheduler;
//! every write to the database is the batch's.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::scheduler::{reap, refresh_user, run};
use super::state::{Account, Live, Pause, Presence};
use super::{Channels, Inner, MeterConfig, MeterEvent, Snapshot, State, TickStats};
use crate::balance;
use crate::error::{Error, Result};
use crate::ids::SessionId;
use crate::money::Millis;
use crate::records::VoiceSession;
use crate::session::{EndReason, OpenRules, OpenSession};
use crate::store::Store;

/// The per-worker meter. Cheap to share behind an `Arc`.
pub struct Meter {
    inner: Arc<Inner>,
    cancel: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Meter {
    /// Starts the meter's schedule and reaper on the current runtime.
    pub fn start(pool: PgPool, config: MeterConfig) -> Meter {
        date_panics();
        let inner = Arc::new(Inner {
            store: Store::new(pool),
            config,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            stats: Mutex::new(TickStats::default()),
            reaped: tokio::sync::broadcast::channel(16).0,
        });
        let cancel = CancellationToken::new();
        let tasks =
            vec![tokio::spawn(run(inner.clone(), cancel.clone())), tokio::spawn(reap(inner.clone(), cancel.clone()))];
        Meter { inner, cancel, tasks: Mutex::new(tasks) }
    }

    /// The orphans this worker's reaper closes (sessions of a worker whose
    /// heartbeat stopped), a batch per reaping, so the owner can tell their
    /// users. A receiver that falls more than 16 batches behind misses some.
    pub fn reaped(&self) -> tokio::sync::broadcast::Receiver<Vec<SessionId>> {
        self.inner.reaped.subscribe()
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
        // What the user's sessions of the last hour were forgiven bounds this one's.
        let hour_ago = self.inner.config.clock.now() - chrono::Duration::hours(1);
        let recent_forgiven = self.inner.store.forgiven_since(spec.user, hour_ago).await?;
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
            live.forgive_limit_ms = Live::forgive_limit_after(recent_forgiven);
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

    /// The user and the agent can no longer hear each other (the user left
    /// the room, or the agent's media is down): stop charging until
    /// [`resume`](Self::resume), from shortly after the user was last heard
    /// if the news came late (see [`Presence`]). Returns the time not
    /// charged because of it.
    pub fn pause_from_last_heard(&self, why: Pause) -> Duration {
        let mut taken = Duration::ZERO;
        self.with_live(|l, now| taken = l.pause_from_last_heard(now, why));
        taken
    }

    /// Tells the meter how to read the room's sign that the user is there.
    pub fn set_presence(&self, presence: Presence) {
        self.with_live(|l, _| l.presence = Some(presence));
    }

    /// Both are in the room again (the user joined or came back).
    pub fn resume(&self) {
        self.resume_with(None, true);
    }

    /// Both are in the room, and have been since `since` (never later than
    /// now): the clock runs from there. For a start confirmed after it
    /// happened, e.g. a message the user acknowledged a return trip later.
    pub fn resume_from(&self, since: Instant) {
        self.resume_with(Some(since), true);
    }

    /// Both are in the room since `since` (never later than now), but the
    /// user's client has not confirmed it learned of the start: the clock
    /// runs from there, and its seconds are written once
    /// [`confirm_start`](Self::confirm_start) or [`keep_start`](Self::keep_start)
    /// decides (at the latest [`START_HOLD_LIMIT`](super::state::START_HOLD_LIMIT)
    /// after it, when the start stands).
    pub fn resume_unconfirmed(&self, since: Instant) {
        self.resume_by(Some(since), |l, from| l.resume_unconfirmed(from));
    }

    /// The user's client learned of the unconfirmed start by `at`: the
    /// clock counts from there if that is later. Returns the time taken off.
    pub fn confirm_start(&self, at: Instant) -> Duration {
        let mut taken = Duration::ZERO;
        self.with_live(|l, now| taken = l.confirm_start(now, Some(at)));
        taken
    }

    /// No confirmation of the unconfirmed start came: it stands.
    pub fn keep_start(&self) {
        self.with_live(|l, now| {
            l.confirm_start(now, None);
        });
    }

    /// The agent's own connection is back, with the user still listed in
    /// the room: charging resumes, and the user's last audio before the
    /// break still counts as the sign that they are there (a leave the
    /// broken connection kept from us comes late; see [`Presence`]).
    pub fn resume_after_break(&self) {
        self.resume_with(None, false);
    }

    /// Runs the clock again from `since` (at most now; `None`: now).
    fn resume_with(&self, since: Option<Instant>, rejoined: bool) {
        self.resume_by(since, |l, from| l.resume(from, rejoined));
    }

    /// Runs `resume` from `since` (at most now; `None`: now) unless the
    /// clock has stopped for good.
    fn resume_by(&self, since: Option<Instant>, resume: impl FnOnce(&mut Live, Instant)) {
        self.with_live(|l, now| {
            if l.exhausted.is_none() && !l.closing {
                resume(l, since.map_or(now, |s| s.min(now)))
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
            // A task that panicked drops its session only after the panic
            // hook has run (a backtrace can take a second on a loaded
            // machine): it ends at the panic.
            let panicked = panicked_here();
            warn!(session = %self.id, panicked = panicked.is_some(), "metered session dropped without close; closing with reason error");
            drop(request_close_at(&self.inner, self.id, EndReason::Error, panicked));
        }
    }
}

thread_local! {
    /// When a panic last began on this thread (see [`date_panics`]).
    static PANICKED_AT: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
}

/// Wraps the process's panic hook (once) so that each panic first notes,
/// on its thread, when it began; the hook in place before still runs.
fn date_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED_AT.with(|p| p.set(Some(std::time::Instant::now())));
            previous(info);
        }));
    });
}

/// When a panic began on this thread, if one did in the last few seconds
/// (the task dropping a session now is the one that panicked); consumed.
fn panicked_here() -> Option<Instant> {
    PANICKED_AT.with(|p| p.take()).filter(|at| at.elapsed() < Duration::from_secs(5)).map(Instant::from_std)
}

fn request_close(inner: &Arc<Inner>, id: SessionId, reason: EndReason) -> oneshot::Receiver<Result<VoiceSession>> {
    request_close_at(inner, id, reason, None)
}

/// Closes at `at` (at most now; `None`: now).
fn request_close_at(
    inner: &Arc<Inner>,
    id: SessionId,
    reason: EndReason,
    at: Option<Instant>,
) -> oneshot::Receiver<Result<VoiceSession>> {
    let (tx, rx) = oneshot::channel();
    let mut guard = inner.lock();
    let st = &mut *guard;
    let now = Instant::now();
    let now = at.map_or(now, |at| at.min(now));
    match (st.sessions.get_mut(&id), st.channels.get_mut(&id)) {
        (Some(l), Some(ch)) => {
            let taken = l.close(now);
            if !taken.is_zero() {
                info!(
                    session = %id,
                    taken_back_ms = taken.as_millis() as u64,
                    "the user's audio had stopped before the end and did not come back: that quiet is not charged"
                );
            }
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
