//! Shared by the worker tests: the LiveKit server (the shared one started
//! through `scripts/livekit-server.sh`, or a private one a test may stop and
//! start), worker tokens, dispatches through the server API, and waiting for
//! worker events.

#![allow(dead_code)] // not every test uses every helper

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use livekit_api::access_token::{AccessToken, VideoGrants};
use livekit_api::services::agent_dispatch::AgentDispatchClient;
use livekit_api::services::room::RoomClient;
use livekit_protocol::{AgentDispatch, CreateAgentDispatchRequest};

use mindbot_transport::worker::{Backoff, TokenFn, WorkerEvent, WorkerEvents, WorkerOptions};

pub const URL: &str = "ws://127.0.0.1:7880";
pub const HTTP_URL: &str = "http://127.0.0.1:7880";
pub const API_KEY: &str = "devkey";
pub const API_SECRET: &str = "secret";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Starts the shared LiveKit server once per test binary (the script reuses a running one).
pub fn server() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let status = Command::new("bash")
            .arg(root().join("scripts/livekit-server.sh"))
            .arg("start")
            .current_dir(root())
            .status()
            .expect("running scripts/livekit-server.sh");
        assert!(status.success(), "scripts/livekit-server.sh start failed");
    });
}

/// Installs a log subscriber once (RUST_LOG picks the level).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Signs worker tokens (video grant `agent: true`) with `secret`.
pub fn token_fn(secret: &str) -> TokenFn {
    let secret = secret.to_string();
    Arc::new(move || {
        AccessToken::with_api_key(API_KEY, &secret)
            .with_grants(VideoGrants { agent: true, ..Default::default() })
            .to_jwt()
            .map_err(|e| e.to_string())
    })
}

/// Worker options for `url` and `agent_name`, with quick reconnects.
pub fn options(url: &str, agent_name: &str) -> WorkerOptions {
    let mut options = WorkerOptions::new(url, agent_name, token_fn(API_SECRET));
    options.reconnect = Backoff { first: Duration::from_millis(200), max: Duration::from_secs(1), attempts: 60 };
    options
}

/// A name no other test (or test run) uses: agent names and rooms are shared server-wide.
pub fn unique(prefix: &str) -> String {
    let n = std::time::UNIX_EPOCH.elapsed().unwrap().as_micros() % 100_000_000;
    format!("{prefix}-{}-{n}", std::process::id())
}

pub fn dispatcher(http_url: &str) -> AgentDispatchClient {
    AgentDispatchClient::with_api_key(http_url, API_KEY, API_SECRET)
}

pub fn rooms(http_url: &str) -> RoomClient {
    RoomClient::with_api_key(http_url, API_KEY, API_SECRET)
}

/// Dispatches `agent_name` to `room` (created if missing) with `metadata`.
pub async fn dispatch(client: &AgentDispatchClient, room: &str, agent_name: &str, metadata: &str) -> AgentDispatch {
    let request = CreateAgentDispatchRequest {
        agent_name: agent_name.to_string(),
        room: room.to_string(),
        metadata: metadata.to_string(),
        ..Default::default()
    };
    client.create_dispatch(request).await.unwrap_or_else(|e| panic!("CreateDispatch in {room}: {e}"))
}

/// The first event that `pick` accepts within `within`, or `None`.
pub async fn maybe<T>(
    events: &mut WorkerEvents,
    within: Duration,
    mut pick: impl FnMut(WorkerEvent) -> Option<T>,
) -> Option<T> {
    tokio::time::timeout(within, async {
        while let Some(event) = events.recv().await {
            if let Some(found) = pick(event) {
                return Some(found);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// The first event that `pick` accepts within `within`; panics otherwise.
pub async fn wait_for<T>(
    events: &mut WorkerEvents,
    within: Duration,
    what: &str,
    pick: impl FnMut(WorkerEvent) -> Option<T>,
) -> T {
    match maybe(events, within, pick).await {
        Some(found) => found,
        None => panic!("no {what} within {within:?}"),
    }
}

/// Waits for the `Connected` event; the worker id.
pub async fn connected(events: &mut WorkerEvents, within: Duration) -> String {
    let worker_id = wait_for(events, within, "Connected event", |e| match e {
        WorkerEvent::Connected { worker_id } => Some(worker_id),
        _ => None,
    })
    .await;
    // The server answers the registration before it files the worker for
    // dispatch; give it that moment so the next dispatch finds us.
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker_id
}

/// A LiveKit server of the test's own, on its own ports, that the test may stop and start.
pub struct PrivateServer {
    port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl PrivateServer {
    /// Writes a config for HTTP `port` (RTC TCP on `port + 1`, UDP `udp_start..=udp_start + 49`) and starts it.
    pub fn start(port: u16, udp_start: u16) -> PrivateServer {
        PrivateServer::start_with(port, udp_start, "")
    }

    /// As [`start`](Self::start), sending its webhooks (signed with the dev key) to `url`.
    pub fn start_with_webhook(port: u16, udp_start: u16, url: &str) -> PrivateServer {
        PrivateServer::start_with(port, udp_start, &format!("webhook:\n  api_key: {API_KEY}\n  urls: [\"{url}\"]\n"))
    }

    fn start_with(port: u16, udp_start: u16, extra_yaml: &str) -> PrivateServer {
        server(); // makes sure the binary is built
        assert!(!answers(port), "something already listens on 127.0.0.1:{port}");
        let dir = std::env::temp_dir().join(format!("mindbot-worker-test-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the server's temp dir");
        let config = dir.join("livekit.yaml");
        let yaml = format!(
            "port: {port}\nbind_addresses: [\"127.0.0.1\"]\nrtc:\n  tcp_port: {}\n  port_range_start: {udp_start}\n  \
             port_range_end: {}\n  use_external_ip: false\n  node_ip: 127.0.0.1\nkeys:\n  {API_KEY}: {API_SECRET}\n\
             logging:\n  level: info\n{extra_yaml}",
            port + 1,
            udp_start + 49
        );
        std::fs::write(&config, yaml).expect("writing the server config");
        let mut server = PrivateServer { port, config, log: dir.join("server.log"), child: None };
        server.resume();
        server
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server process (as a crash or restart would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-CONT").arg(child.id().to_string()).status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Pauses the server process (SIGSTOP): its sockets stay open but nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("the private server is running").id();
        let status = Command::new("kill").arg(signal).arg(pid.to_string()).status().expect("running kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Starts the server process again and waits until it answers.
    pub fn resume(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("server log");
        let child = Command::new(root().join(".cache/livekit/bin/server"))
            .arg("--config")
            .arg(&self.config)
            .stdout(Stdio::from(log.try_clone().expect("server log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting .cache/livekit/bin/server");
        self.child = Some(child);
        let started = Instant::now();
        while !answers(self.port) {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "the private server did not start; see {:?}",
                self.log
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateServer {
    /// Stops the server; its config and log stay behind only when the test failed.
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            if let Some(dir) = self.config.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

fn answers(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}
