//! The LiveKit server of the tests: the shared dev server that
//! `scripts/livekit-server.sh` starts (and reuses when it runs already), its
//! keys, tokens and server API clients, and private servers on a test's own
//! ports that it may stop, freeze and start again.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use livekit_api::access_token::{AccessToken, VideoGrants};
use livekit_api::services::agent_dispatch::AgentDispatchClient;
use livekit_api::services::room::RoomClient;
use livekit_protocol::{AgentDispatch, CreateAgentDispatchRequest};

use crate::root;

pub const URL: &str = "ws://127.0.0.1:7880";
pub const HTTP_URL: &str = "http://127.0.0.1:7880";
pub const API_KEY: &str = "devkey";
pub const API_SECRET: &str = "secret";

/// Starts the shared LiveKit server once per process (the script reuses a running one).
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

/// A join token for `identity` in `room`, allowed to publish, subscribe and set its metadata.
pub fn token(room: &str, identity: &str) -> String {
    AccessToken::with_api_key(API_KEY, API_SECRET)
        .with_identity(identity)
        .with_name(identity)
        .with_grants(VideoGrants {
            room_join: true,
            room: room.to_string(),
            can_update_own_metadata: Some(true),
            ..Default::default()
        })
        .to_jwt()
        .expect("signing a token")
}

/// A name no other test (or test run) uses: agent names and rooms are shared server-wide.
pub fn unique(prefix: &str) -> String {
    let n = std::time::UNIX_EPOCH.elapsed().unwrap().as_micros() % 100_000_000;
    format!("{prefix}-{}-{n}", std::process::id())
}

/// The agent dispatch API of the server at `http_url`.
pub fn dispatcher(http_url: &str) -> AgentDispatchClient {
    AgentDispatchClient::with_api_key(http_url, API_KEY, API_SECRET)
}

/// The room API of the server at `http_url`.
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

/// Whether something accepts TCP connections on loopback `port`.
pub fn answers(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}
