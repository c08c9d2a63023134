//! Shared by the room tests: the kit's LiveKit server (started once through
//! `scripts/livekit-server.sh`), tokens and server API, and helpers on the
//! transport's own room events and audio.

#![allow(dead_code)] // each test module uses a different part

use std::time::Duration;

use livekit_api::services::room::RoomClient;
use mindbot_transport::room::{ConnectOptions, Room, RoomEvent, RoomEvents};

pub use mindbot_tests::livekit::{server, token, unique as room_name, API_KEY, API_SECRET, HTTP_URL, URL};
pub use mindbot_tests::logs;

/// The server API client.
pub fn api() -> RoomClient {
    mindbot_tests::livekit::rooms(HTTP_URL)
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
