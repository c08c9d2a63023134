//! Shared by the worker tests: the kit's LiveKit servers (the shared one
//! started through `scripts/livekit-server.sh`, or a private one a test may
//! stop and start) and dispatches, worker tokens and options, and waiting
//! for worker events.

#![allow(dead_code)] // not every test uses every helper

use std::sync::Arc;
use std::time::Duration;

use livekit_api::access_token::{AccessToken, VideoGrants};
use mindbot_transport::worker::{Backoff, TokenFn, WorkerEvent, WorkerEvents, WorkerOptions};

pub use mindbot_tests::livekit::*;
pub use mindbot_tests::logs;

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
