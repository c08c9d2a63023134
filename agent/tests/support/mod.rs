//! Shared by the room tests: a real LiveKit server (started once through
//! `scripts/livekit-server.sh`), tokens, the server API, and small helpers.

#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use livekit_api::access_token::{AccessToken, VideoGrants};
use livekit_api::services::room::RoomClient;
use mindbot_transport::room::{ConnectOptions, Room, RoomEvent, RoomEvents};

pub const URL: &str = "ws://127.0.0.1:7880";
pub const API_KEY: &str = "devkey";
pub const API_SECRET: &str = "secret";

/// Starts the LiveKit server once per test binary (the script reuses a running one).
pub fn server() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let status = Command::new("bash")
            .arg(root.join("scripts/livekit-server.sh"))
            .arg("start")
            .current_dir(&root)
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

/// The server API client.
pub fn api() -> RoomClient {
    RoomClient::with_api_key("http://127.0.0.1:7880", API_KEY, API_SECRET)
}

/// A room name no other test uses.
pub fn room_name(test: &str) -> String {
    format!("{test}-{}-{}", std::process::id(), std::time::UNIX_EPOCH.elapsed().unwrap().as_millis() % 1_000_000)
}

/// Joins `room` as `identity` with default options.
pub async fn join(room: &str, identity: &str) -> (Room, RoomEvents) {
    server();
    mindbot_transport::room::connect(URL, &token(room, identity), ConnectOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{identity} joining {room}: {e}"))
}

/// Identities the server lists in `room`.
pub async fn listed(room: &str) -> Vec<String> {
    let mut ids: Vec<String> =
        api().list_participants(room).await.expect("ListParticipants").into_iter().map(|p| p.identity).collect();
    ids.sort();
    ids
}

/// The first event that `pick` accepts, within `within`; panics otherwise.
pub async fn wait_for<T>(events: &mut RoomEvents, within: Duration, mut pick: impl FnMut(RoomEvent) -> Option<T>) -> T {
    let found = tokio::time::timeout(within, async {
        while let Some(event) = events.recv().await {
            if let Some(found) = pick(event) {
                return Some(found);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(found)) => found,
        Ok(None) => panic!("the room's events ended first"),
        Err(_) => panic!("no matching event within {within:?}"),
    }
}

/// Installs a log subscriber once (RUST_LOG picks the level).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Frequency from interpolated rising zero crossings.
pub fn frequency(pcm: &[i16]) -> f64 {
    let mut crossings = Vec::new();
    for i in 1..pcm.len() {
        let (a, b) = (f64::from(pcm[i - 1]), f64::from(pcm[i]));
        if a < 0.0 && b >= 0.0 {
            crossings.push((i - 1) as f64 + a / (a - b));
        }
    }
    let (first, last) = (crossings[0], crossings[crossings.len() - 1]);
    (crossings.len() - 1) as f64 * 48_000.0 / (last - first)
}

/// RMS level in dB below full scale.
pub fn rms_dbfs(pcm: &[i16]) -> f64 {
    let energy: f64 = pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64;
    20.0 * (energy.sqrt() / 32768.0).log10()
}
