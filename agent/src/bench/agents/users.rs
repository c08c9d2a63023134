//! The benchmark's end users and its view of the server. A user is this
//! crate's own room client (no libwebrtc, so hundreds fit in the benchmark
//! process), optionally publishing a tone; a task records what it sees: the
//! agent arriving, the "ended" message, and its own removal. Dispatches go
//! through the server API, and "the agent is in the room" is read from the
//! server's participant list, not from the users' events: the server
//! announces a participant that publishes nothing only on a 3 s batch, so an
//! event would time the server's batching rather than the agent.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use livekit_api::services::agent_dispatch::AgentDispatchClient;
use livekit_api::services::room::RoomClient;
use livekit_protocol::{participant_info, CreateAgentDispatchRequest};
use mindbot_transport::room::{self, ConnectOptions, DisconnectReason, Room, RoomEvent, SAMPLE_RATE};
use tokio::task::JoinHandle;

use crate::config::Config;

/// What a user saw, as it happened.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// When the first agent participant was announced to the user.
    pub agent: Option<Instant>,
    /// The "at" (Unix seconds) of an `ended` message on `mindbot.session`, if it had one.
    pub ended_at: Option<f64>,
    /// Whether any `ended` message came.
    pub ended: bool,
    /// When the server ended the user's connection, and why.
    pub gone: Option<(SystemTime, DisconnectReason)>,
}

/// One end user in one room.
pub struct User {
    pub identity: String,
    pub room_name: String,
    room: Option<Room>,
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<JoinHandle<()>>,
}

impl User {
    /// Joins `room_name` as `identity` (a plain token: the dispatch comes separately).
    pub async fn join(config: &Config, room_name: &str, identity: &str, tone: bool) -> Result<User> {
        let token = super::super::room_token(config, room_name, identity)?;
        let options = ConnectOptions { subscribe_audio: false, ..ConnectOptions::default() };
        let (room, mut events) = room::connect(&config.livekit.url, &token, options)
            .await
            .with_context(|| format!("user joining {room_name}"))?;
        let mut tasks = Vec::new();
        if tone {
            let source = room.publish_audio("microphone").await.context("publishing the user's tone")?;
            let pcm: Vec<i16> = (0..SAMPLE_RATE as usize)
                .map(|i| ((i as f64 * 440.0 * std::f64::consts::TAU / f64::from(SAMPLE_RATE)).sin() * 6000.0) as i16)
                .collect();
            tasks.push(tokio::spawn(async move { while source.push(&pcm).await.is_ok() {} }));
        }
        let seen = Arc::new(Mutex::new(Seen::default()));
        let log = seen.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let mut s = log.lock().unwrap_or_else(|p| p.into_inner());
                match event {
                    RoomEvent::ParticipantJoined(p) if p.is_agent && s.agent.is_none() => {
                        s.agent = Some(Instant::now())
                    }
                    RoomEvent::Data(d) if d.topic.as_deref() == Some("mindbot.session") => {
                        let v: serde_json::Value = serde_json::from_slice(&d.payload).unwrap_or_default();
                        if v["type"] == "ended" {
                            s.ended = true;
                            s.ended_at = v["at"].as_f64();
                        }
                    }
                    RoomEvent::Disconnected { reason } => s.gone = Some((SystemTime::now(), reason)),
                    _ => {}
                }
            }
        }));
        Ok(User { identity: identity.to_string(), room_name: room_name.to_string(), room: Some(room), seen, tasks })
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until the server ends this user's connection, at most `limit`.
    pub async fn wait_gone(&self, limit: Duration) -> Option<(SystemTime, DisconnectReason)> {
        self.wait_until(limit, |seen| seen.gone).await
    }

    /// Waits until the agent has been announced to this user, at most `limit`.
    pub async fn wait_agent(&self, limit: Duration) -> Option<Instant> {
        self.wait_until(limit, |seen| seen.agent).await
    }

    /// Looks every 5 ms, for at most `limit`, until `what` this user has seen is there.
    async fn wait_until<T>(&self, limit: Duration, what: impl Fn(Seen) -> Option<T>) -> Option<T> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Some(found) = what(self.seen()) {
                return Some(found);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }

    pub async fn leave(mut self) {
        if let Some(room) = self.room.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), room.leave()).await;
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The server API clients the benchmark uses.
pub struct Server {
    pub rooms: RoomClient,
    dispatch: AgentDispatchClient,
}

impl Server {
    pub fn new(config: &Config) -> Server {
        let lk = &config.livekit;
        let http = mindbot_transport::url::http_base(&lk.url);
        Server {
            rooms: RoomClient::with_api_key(&http, &lk.api_key, lk.api_secret.expose()),
            dispatch: AgentDispatchClient::with_api_key(&http, &lk.api_key, lk.api_secret.expose()),
        }
    }

    /// Dispatches `agent_name` to `room` with `metadata`.
    pub async fn dispatch(&self, room: &str, agent_name: &str, metadata: &serde_json::Value) -> Result<()> {
        let req = CreateAgentDispatchRequest {
            agent_name: agent_name.to_string(),
            room: room.to_string(),
            metadata: metadata.to_string(),
            ..Default::default()
        };
        self.dispatch.create_dispatch(req).await.with_context(|| format!("dispatching {agent_name} to {room}"))?;
        Ok(())
    }

    /// Whether an agent participant of `room` is active (media connected).
    pub async fn agent_active(&self, room: &str) -> bool {
        self.rooms.list_participants(room).await.is_ok_and(|ps| {
            ps.iter().any(|p| {
                p.kind == participant_info::Kind::Agent as i32 && p.state == participant_info::State::Active as i32
            })
        })
    }

    /// Polls every `every` until an agent of `room` is active; when, or `None` after `limit`.
    pub async fn wait_agent_active(&self, room: &str, every: Duration, limit: Duration) -> Option<Instant> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if self.agent_active(room).await {
                return Some(Instant::now());
            }
            tokio::time::sleep(every).await;
        }
        None
    }

    /// Deletes `room` (its agent's job ends); errors are ignored: the room may be gone already.
    pub async fn delete_room(&self, room: &str) {
        let _ = self.rooms.delete_room(room).await;
    }
}
