//! How a worker is set up: where it connects, how it signs in, how many jobs
//! it takes, and the timings of the protocol.
//!
//! The defaults follow LiveKit's Python agents framework where it has an
//! opinion (status every 2.5 s, 7.5 s to wait for an assignment, full at load
//! 0.7, reconnect waits growing to 10 s, 16 tries) and the server where it
//! decides (its default `agents.target_load` of 0.7). Signing the worker
//! token is the caller's: this module has no JWT code of its own.

use std::sync::Arc;
use std::time::Duration;

use super::job::{AgentParticipant, Job};

/// Signs a worker token: a JWT for the LiveKit API key whose video grant has
/// `agent: true`. Called before every connection attempt, so it can mint a
/// fresh one each time. With `livekit-api`:
/// `AccessToken::with_api_key(key, secret).with_grants(VideoGrants { agent: true, ..Default::default() }).to_jwt()`.
pub type TokenFn = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// The worker's load in 0..=1 (CPU, memory, whatever limits it); at or above
/// `load_threshold` the worker is full.
pub type LoadFn = Arc<dyn Fn() -> f32 + Send + Sync>;

/// Decides on an offered job: `Some(participant)` accepts it with that agent
/// participant, `None` declines it. Runs on the worker's task, so it must be quick.
pub type AcceptFn = Arc<dyn Fn(&Job) -> Option<AgentParticipant> + Send + Sync>;

/// Everything `Worker::connect` needs. `WorkerOptions::new` fills in the defaults.
#[derive(Clone)]
pub struct WorkerOptions {
    /// The LiveKit URL (`ws://`, `wss://`, or `http(s)://` mapped to them).
    pub url: String,
    /// Signs the worker token (see [`TokenFn`]).
    pub token: TokenFn,
    /// The agent name dispatches target; the worker gets only explicit dispatches to it.
    pub agent_name: String,
    /// The worker's version, shown by the server.
    pub version: String,
    /// Jobs run at once, counting those accepted and not yet assigned.
    pub max_jobs: u32,
    /// The worker's load; without it, the load is the share of `max_jobs` in
    /// use scaled so that all of them in use is exactly `load_threshold`.
    pub load_fn: Option<LoadFn>,
    /// The load at which the worker is full. LiveKit sends a node no jobs at
    /// all once every worker there reports a load at or above the server's
    /// `agents.target_load` (0.7 by default), so the default is 0.7: the
    /// server and the worker agree on when it is full.
    pub load_threshold: f32,
    /// Accepts or declines an offer; without it, every offer within capacity is
    /// accepted with [`AgentParticipant::for_job`].
    pub accept_fn: Option<AcceptFn>,
    /// How long an accepted offer holds its slot while waiting for the assignment.
    pub assignment_timeout: Duration,
    /// How often the worker reports its status (also sent on every change).
    pub status_interval: Duration,
    /// How often the worker pings the server.
    pub ping_interval: Duration,
    /// Silence from the server for this long means the connection is dead.
    pub ping_timeout: Duration,
    /// The deadline for one connection attempt (WebSocket handshake and registration).
    pub connect_timeout: Duration,
    /// Reconnecting after the connection drops.
    pub reconnect: Backoff,
}

impl WorkerOptions {
    /// Options with the defaults for everything but the URL, token and agent name.
    pub fn new(url: impl Into<String>, agent_name: impl Into<String>, token: TokenFn) -> WorkerOptions {
        WorkerOptions {
            url: url.into(),
            token,
            agent_name: agent_name.into(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            max_jobs: 100,
            load_fn: None,
            load_threshold: 0.7,
            accept_fn: None,
            assignment_timeout: Duration::from_millis(7_500),
            status_interval: Duration::from_millis(2_500),
            ping_interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            reconnect: Backoff::default(),
        }
    }

    /// Rejects settings the worker cannot run with, naming the field.
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.agent_name.is_empty() {
            return Err("agent_name is empty: the worker would get every automatic dispatch".into());
        }
        if self.max_jobs == 0 {
            return Err("max_jobs is 0".into());
        }
        if !(self.load_threshold > 0.0 && self.load_threshold <= 1.0) {
            return Err(format!("load_threshold {} is not in (0, 1]", self.load_threshold));
        }
        let timings = [
            ("assignment_timeout", self.assignment_timeout),
            ("status_interval", self.status_interval),
            ("ping_interval", self.ping_interval),
            ("connect_timeout", self.connect_timeout),
        ];
        if let Some((name, _)) = timings.iter().find(|(_, d)| d.is_zero()) {
            return Err(format!("{name} is zero"));
        }
        if self.ping_timeout <= self.ping_interval {
            return Err("ping_timeout must be longer than ping_interval".into());
        }
        Ok(())
    }
}

impl std::fmt::Debug for WorkerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerOptions")
            .field("url", &self.url)
            .field("agent_name", &self.agent_name)
            .field("version", &self.version)
            .field("max_jobs", &self.max_jobs)
            .field("load_fn", &self.load_fn.is_some())
            .field("load_threshold", &self.load_threshold)
            .field("accept_fn", &self.accept_fn.is_some())
            .field("reconnect", &self.reconnect)
            .finish_non_exhaustive()
    }
}

/// Waits between reconnect attempts: `first`, doubling up to `max`, for at most `attempts` tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    pub attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { first: Duration::from_millis(500), max: Duration::from_secs(10), attempts: 16 }
    }
}

impl Backoff {
    /// The wait before attempt `n` (1-based).
    pub fn delay(&self, n: u32) -> Duration {
        let doublings = n.saturating_sub(1).min(20);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let b = Backoff::default();
        let waits: Vec<u64> = (1..=7).map(|n| b.delay(n).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1_000, 2_000, 4_000, 8_000, 10_000, 10_000]);
        assert_eq!(b.delay(1_000), Duration::from_secs(10));
    }

    #[test]
    fn options_name_the_bad_field() {
        let token: TokenFn = Arc::new(|| Ok("t".into()));
        let mut options = WorkerOptions::new("ws://x", "mindbot", token);
        assert!(options.validate().is_ok());
        options.max_jobs = 0;
        assert!(options.validate().unwrap_err().contains("max_jobs"));
        options.max_jobs = 1;
        options.load_threshold = 0.0;
        assert!(options.validate().unwrap_err().contains("load_threshold"));
        options.load_threshold = 1.0;
        options.ping_timeout = options.ping_interval;
        assert!(options.validate().unwrap_err().contains("ping_timeout"));
    }
}
