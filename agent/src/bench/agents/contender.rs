//! The two workers under test, each a process (group) of its own: ours
//! (this binary's `run`, on the benchmark database) and LiveKit's Python
//! agents framework (`tests/agents/minimal_agent.py start`, or
//! `tests/agents/voice_agent.py start` when they talk). Each registers
//! under an agent name of its own, so only the benchmark's dispatches reach it.
//! Our worker logs JSON; the instant its meter finds a balance exhausted is
//! read from there.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::config::Config;

/// Which worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Mindbot,
    LivekitAgents,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Mindbot => "mindbot",
            Kind::LivekitAgents => "livekit-agents",
        }
    }
}

/// A running worker.
pub struct Contender {
    pub kind: Kind,
    pub agent_name: String,
    child: Child,
    pid: u32,
    /// User id -> when our meter found their balance exhausted (ours only).
    exhausted: Arc<Mutex<HashMap<String, DateTime<Utc>>>>,
    /// The last lines it logged, for error messages.
    tail: Arc<Mutex<Vec<String>>>,
}

/// The project root: the working directory if it is one, else where this was built.
pub fn root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_default();
    if cwd.join("tests/agents/minimal_agent.py").exists() {
        return cwd;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl Contender {
    /// Starts `kind` and returns once it has registered with LiveKit; with
    /// `talking`, ours runs its voice pipeline on `[voice]`'s providers (no
    /// greeting) and theirs is `voice_agent.py` with `talking`'s environment.
    pub async fn start(
        kind: Kind,
        config: &Config,
        database_url: &str,
        max_jobs: usize,
        talking: Option<&[(String, String)]>,
    ) -> Result<Contender> {
        let lk = &config.livekit;
        let agent_name = format!("bench-{}-{}", kind.label(), std::process::id());
        let mut cmd = match kind {
            Kind::Mindbot => {
                let mut cmd = Command::new(std::env::current_exe().context("locating this binary")?);
                cmd.arg("run")
                    .env("DATABASE_URL", database_url)
                    .env("MINDBOT_LIVEKIT_AGENT_NAME", &agent_name)
                    .env("MINDBOT_DATABASE_MIGRATE_ON_START", "false")
                    .env("MINDBOT_WORKER_MAX_JOBS", max_jobs.to_string())
                    .env("MINDBOT_HTTP_ADDRESS", "127.0.0.1:0")
                    // Silent, or talking without a greeting, as theirs does.
                    .env("MINDBOT_VOICE_ENABLED", talking.is_some().to_string())
                    .env("MINDBOT_VOICE_GREET", "false")
                    .env("MINDBOT_LOG_FORMAT", "json")
                    .env("MINDBOT_LOG_LEVEL", "info")
                    .env_remove("RUST_LOG");
                cmd
            }
            Kind::LivekitAgents => {
                let root = root();
                let python = root.join(".cache/venv-agents/bin/python");
                if !python.exists() {
                    bail!("{} is missing: run `bash scripts/python-env.sh agents`", python.display());
                }
                let script = if talking.is_some() { "voice_agent.py" } else { "minimal_agent.py" };
                let mut cmd = Command::new(python);
                cmd.arg(root.join("tests/agents").join(script))
                    .arg("start")
                    .envs(talking.unwrap_or_default().iter().map(|(k, v)| (k, v)))
                    .env("LIVEKIT_AGENT_NAME", &agent_name)
                    // Twice ours: it adds a per-job estimate for every job accepted
                    // but not yet launched, and at 46 of 55 running it declined more.
                    .env("AGENT_MAX_JOBS", (2 * max_jobs).to_string())
                    .env("LIVEKIT_LOG_LEVEL", "info");
                cmd
            }
        };
        cmd.env("LIVEKIT_URL", &lk.url)
            .env("LIVEKIT_API_KEY", &lk.api_key)
            .env("LIVEKIT_API_SECRET", lk.api_secret.expose())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0) // its own group: stopped as a whole, job processes included
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("starting the {} worker", kind.label()))?;
        let pid = child.id().context("the worker exited at once")?;
        let log_path = std::env::temp_dir().join(format!("{agent_name}.log"));
        let log = Arc::new(Mutex::new(
            std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?,
        ));
        let exhausted = Arc::new(Mutex::new(HashMap::new()));
        let tail = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::watch::channel(false);
        let tx = Arc::new(tx);
        let outputs: [Box<dyn tokio::io::AsyncRead + Unpin + Send>; 2] = [
            Box::new(child.stdout.take().context("worker stdout")?),
            Box::new(child.stderr.take().context("worker stderr")?),
        ];
        for out in outputs {
            let (exhausted, tail, tx, log) = (exhausted.clone(), tail.clone(), tx.clone(), log.clone());
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    read_log_line(&line, &exhausted, &tx);
                    let _ = writeln!(log.lock().unwrap_or_else(|p| p.into_inner()), "{line}");
                    let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                    if tail.len() >= 20 {
                        tail.remove(0);
                    }
                    tail.push(line);
                }
            });
        }
        println!("{}: worker log in {}", kind.label(), log_path.display());
        let mut contender = Contender { kind, agent_name, child, pid, exhausted, tail };
        let mut rx = rx;
        // The guard `wait_for` returns is dropped at once: it holds the value's read lock.
        let registered = tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|r| *r)).await.map(|r| r.is_ok());
        if registered != Ok(true) {
            let tail = contender.tail();
            contender.stop().await;
            bail!("the {} worker did not register with LiveKit within 60 s; its last lines:\n{tail}", kind.label());
        }
        // The server files a new worker for dispatch just after answering its registration.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(contender)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// When our meter found `user`'s balance exhausted, if it did.
    pub fn exhausted_at(&self, user: &str) -> Option<DateTime<Utc>> {
        self.exhausted.lock().unwrap_or_else(|p| p.into_inner()).get(user).copied()
    }

    pub fn tail(&self) -> String {
        self.tail.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
    }

    /// SIGTERM to the whole group, then SIGKILL after 10 s.
    pub async fn stop(&mut self) {
        signal_group(self.pid, "TERM").await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            signal_group(self.pid, "KILL").await;
            let _ = self.child.wait().await;
        }
        // Job processes that outlived their parent.
        tokio::time::sleep(Duration::from_millis(200)).await;
        signal_group(self.pid, "KILL").await;
    }
}

impl Drop for Contender {
    /// An interrupted benchmark leaves no worker behind, job processes included.
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.pid)])
            .stderr(Stdio::null())
            .status();
    }
}

/// Sends `sig` to the process group led by `pid` (one we started).
async fn signal_group(pid: u32, sig: &str) {
    let _ =
        Command::new("kill").args([&format!("-{sig}"), "--", &format!("-{pid}")]).stderr(Stdio::null()).status().await;
}

/// Notes registration and (ours) exhaustion instants from one log line.
fn read_log_line(
    line: &str,
    exhausted: &Mutex<HashMap<String, DateTime<Utc>>>,
    registered: &tokio::sync::watch::Sender<bool>,
) {
    // Ours: "worker registered; waiting for jobs"; LiveKit's: "registered worker".
    if line.contains("worker registered") || line.contains("registered worker") {
        registered.send_if_modified(|r| !std::mem::replace(r, true));
    }
    if !line.contains("balance exhausted") {
        return;
    }
    if let Some((user, at)) = exhaustion(line) {
        exhausted.lock().unwrap_or_else(|p| p.into_inner()).insert(user, at);
    }
}

/// `(user, timestamp)` of our worker's JSON "balance exhausted" line.
fn exhaustion(line: &str) -> Option<(String, DateTime<Utc>)> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["fields"]["message"] != "balance exhausted" {
        return None;
    }
    let at = DateTime::parse_from_rfc3339(v["timestamp"].as_str()?).ok()?.with_timezone(&Utc);
    Some((v["fields"]["user"].as_str()?.to_string(), at))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_exhaustion_instant_from_our_json_log() {
        let line = r#"{"timestamp":"2026-11-25T18:00:01.250000Z","level":"INFO","fields":{"message":"balance exhausted","session":"s","user":"u-1"},"target":"metering::meter"}"#;
        let (user, at) = super::exhaustion(line).expect("parsed");
        assert_eq!(user, "u-1");
        assert_eq!(at.timestamp_millis(), 1_795_629_601_250);
        assert!(super::exhaustion(r#"{"fields":{"message":"session started"}}"#).is_none());
    }
}
