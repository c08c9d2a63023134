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
//!
//! The parts, in the order a session meets them:
//! - this file: settings, what the meter tells a session, and the state the
//!   parts share behind one lock;
//! - `handles`: what the worker and each session hold ([`Meter`],
//!   [`MeteredSession`]) and the requests they make;
//! - `scheduler`: the per-second ticking, the exhaustion timer, warnings and
//!   snapshots, the reaper;
//! - `batch`: one tick batch's write, step by step;
//! - [`state`]: the money rules as a pure state machine, no I/O.

mod batch;
mod handles;
mod scheduler;
pub mod state;

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;

use crate::error::Result;
use crate::ids::{SessionId, UserId};
use crate::money::Millis;
use crate::records::VoiceSession;
use crate::session::EndReason;
use crate::store::Store;
use state::{Account, Exhaustion, Live};

pub use handles::{Meter, MeteredSession};
pub use state::{Pause, Presence};

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
    /// Other workers' sessions this worker's reaper closed (see [`Meter::reaped`]).
    reaped: tokio::sync::broadcast::Sender<Vec<SessionId>>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn thresholds_ms(&self) -> Vec<i64> {
        self.config.warnings.iter().map(|d| d.as_millis() as i64).collect()
    }
}
