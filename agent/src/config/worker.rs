//! `[worker]`, `[meter]` and `[cards]`: how the worker takes jobs and hangs
//! up, how often the meter writes, and the card activation rules.

use anyhow::{bail, Result};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Sessions this worker runs at once.
    pub max_jobs: u32,
    /// After SIGTERM, running sessions may go on this long, then end (`shutdown`).
    pub drain_timeout_seconds: u64,
    /// A user who leaves has this long to come back before the session ends (`user_left`).
    pub user_grace_seconds: u64,
    /// How long the agent waits for the user to be in the room.
    pub user_wait_seconds: u64,
    /// How long a user's client has to acknowledge the readiness probe
    /// before the session starts anyway (a client without LiveKit RPC).
    #[serde(default = "default_ready_wait")]
    pub ready_wait_seconds: u64,
    /// Balance updates go to the user at least this often.
    pub balance_update_seconds: u64,
    /// How the agent hangs up when the balance runs out or a limit is reached.
    pub hangup: HangUp,
    /// Rooms whose dispatch no worker took are dispatched again after this
    /// long (0: never; see `redispatch`).
    pub redispatch_seconds: u64,
}

/// How a session hangs up when the money runs out (`worker.hangup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangUp {
    /// `remove_participant`: the user is removed; the room stays.
    RemoveParticipant,
    /// `delete_room`: the room is deleted, with everyone in it.
    DeleteRoom,
}

impl<'de> Deserialize<'de> for HangUp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let given = String::deserialize(d)?;
        super::one_of(
            "worker.hangup",
            &[("remove_participant", HangUp::RemoveParticipant), ("delete_room", HangUp::DeleteRoom)],
            &given,
        )
    }
}

fn default_ready_wait() -> u64 {
    10
}

impl WorkerSettings {
    pub(super) fn validate(&self) -> Result<()> {
        if self.max_jobs == 0 {
            bail!("config key worker.max_jobs must be at least 1");
        }
        if self.balance_update_seconds == 0 || self.user_wait_seconds == 0 {
            bail!("config keys worker.balance_update_seconds and worker.user_wait_seconds must be positive");
        }
        if !(1..=60).contains(&self.ready_wait_seconds) {
            bail!("config key worker.ready_wait_seconds must be between 1 and 60 (got {})", self.ready_wait_seconds);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterSettings {
    pub tick_interval_ms: u64,
    pub warnings_seconds: Vec<u64>,
    pub db_grace_seconds: u64,
    pub write_timeout_ms: u64,
    pub heartbeat_timeout_seconds: u64,
    pub reap_interval_seconds: u64,
}

impl MeterSettings {
    pub(super) fn validate(&self) -> Result<()> {
        if !(100..=10_000).contains(&self.tick_interval_ms) {
            bail!("config key meter.tick_interval_ms must be between 100 and 10000 (got {})", self.tick_interval_ms);
        }
        if self.warnings_seconds.contains(&0) {
            bail!("config key meter.warnings_seconds must hold positive numbers of seconds");
        }
        if self.write_timeout_ms == 0 || self.reap_interval_seconds == 0 {
            bail!("config keys meter.write_timeout_ms and meter.reap_interval_seconds must be positive");
        }
        if self.heartbeat_timeout_seconds * 1000 < self.tick_interval_ms * 3 {
            bail!("config key meter.heartbeat_timeout_seconds must be at least three tick intervals");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardSettings {
    /// Days an activated card stays valid; 0 means it never expires.
    pub validity_days: u32,
    pub activation_max_failures: u32,
    pub activation_window_minutes: u32,
}

impl CardSettings {
    pub(super) fn validate(&self) -> Result<()> {
        if self.activation_max_failures == 0 || self.activation_window_minutes == 0 {
            bail!("config keys cards.activation_max_failures and cards.activation_window_minutes must be positive");
        }
        Ok(())
    }
}
