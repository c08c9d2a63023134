//! Benchmarks that print figures, never assertions (the machines are noisy):
//! `bench meter` (the metering engine, one or several meters, on one PostgreSQL) and `bench rooms`
//! (agent participants with audio both ways on a LiveKit server).

mod agents;
mod load;
mod meter;
mod meter_db;
mod rooms;
mod voice;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use livekit_api::access_token::{AccessToken, VideoGrants};

use crate::config::Config;

/// A token that lets `identity` join `room` (no dispatch: the benchmarks
/// place or dispatch agents themselves).
fn room_token(config: &Config, room: &str, identity: &str) -> Result<String> {
    AccessToken::with_api_key(&config.livekit.api_key, config.livekit.api_secret.expose())
        .with_identity(identity)
        .with_grants(VideoGrants { room_join: true, room: room.to_string(), ..Default::default() })
        .to_jwt()
        .with_context(|| format!("signing a token for {identity} in {room}"))
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// M meters (as M workers) with S concurrent metered sessions each, for
    /// T seconds, on one PostgreSQL: tick write p50/p99/max per meter and
    /// overall, statements per second, the database's CPU, rows and WAL per
    /// session-second, the meters' CPU, and the audit.
    Meter(meter::MeterArgs),
    /// N rooms with two participants each, both publishing an Opus tone and
    /// decoding the other's, for S seconds: RSS and CPU per participant.
    /// Needs the LiveKit server at livekit.url (scripts/livekit-server.sh start).
    Rooms {
        #[arg(long, default_value_t = 20)]
        rooms: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Our worker against a minimal LiveKit Agents (Python) worker: join and
    /// hang-up latency, RSS and CPU per session, and the ratios.
    ///
    /// Runs `mindbot-agent run`, then tests/agents/minimal_agent.py, on the
    /// same kind of rooms and users: dispatch to agent active in the room
    /// (p50/p99), hang-up latency after a balance of S seconds (p50/p99), and
    /// the RSS / CPU of the worker's whole process tree per session at N
    /// concurrent sessions. Needs PostgreSQL (a scratch database is made and
    /// dropped) and the LiveKit server (scripts/livekit-server.sh start);
    /// makes the Python venv with `scripts/python-env.sh agents`.
    Agents(agents::AgentsArgs),
    /// Voice turns between a speaking user and the agent's pipeline in one
    /// room: end of user speech to first agent audio (p50/p95).
    /// Needs the LiveKit server and the [voice] providers: config.toml's are
    /// the local stack (scripts/local-voice.sh start); the user's questions
    /// are spoken by the same text to speech.
    Voice {
        #[arg(long, default_value_t = 10)]
        turns: usize,
    },
    /// N user visits in flight for S seconds against the cluster of
    /// scripts/cluster.sh (loopback only): latencies, sessions per worker,
    /// CPU and memory of each part, then each session's charge against what
    /// its user saw, and the audit; non-zero exit on any violation.
    Load(load::LoadArgs),
}

pub async fn run(config: &Config, cmd: BenchCommand) -> Result<ExitCode> {
    match cmd {
        BenchCommand::Meter(args) => meter::meter(config, args).await,
        BenchCommand::Rooms { rooms, seconds } => rooms::rooms(config, rooms, seconds).await,
        BenchCommand::Agents(args) => agents::agents(config, args).await,
        BenchCommand::Voice { turns } => voice::voice(config, turns).await,
        BenchCommand::Load(args) => load::load(config, args).await,
    }
}

/// This process's resident memory.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:")).map(str::to_string))
        .and_then(|v| v.split_whitespace().next().and_then(|kb| kb.parse::<u64>().ok()))
        .map_or(0, |kb| kb * 1024)
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // After the parenthesised command name, utime and stime are fields 12 and 13.
    let Some(close) = stat.rfind(')') else { return 0.0 };
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0 // USER_HZ is 100 on Linux
}
