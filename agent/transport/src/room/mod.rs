//! The agent's seat in a LiveKit room: signaling, WebRTC media and data,
//! without LiveKit's libwebrtc-based client.
//!
//! `connect` opens LiveKit's `/rtc` signaling WebSocket, answers the
//! server's subscriber offer, offers a publisher connection with the
//! `_reliable` and `_lossy` data channels, and returns once both are up.
//! The `Room` handle then sends data and text streams (LiveKit's data
//! streams, `streams.rs`), publishes an Opus microphone track fed with PCM,
//! sends LiveKit RPC requests, sets attributes and leaves; `RoomEvents`
//! brings participants (listed, media connected, gone), tracks, data, whole
//! text streams, RPC receipts, decoded remote audio and the reason the room
//! ended (RPC requests to us are answered as the SDKs do), and `Room::audio_heard` when each
//! remote participant's audio last arrived (`heard.rs`).
//! This module must not know about sessions, billing or personas.
//!
//! # Cost
//! Measured on this machine against LiveKit 1.13.5 on loopback:
//! - join to both connections ICE-connected with both data channels open:
//!   about 0.1 s; still listed by the server after 90 s (it drops
//!   participants that never become active after about a minute);
//! - 20 participants in one process (10 rooms, each with two participants
//!   sending an Opus tone to each other and decoding what they hear), release
//!   build: 0.6 MB of RSS and 0.75-0.85% of a core per participant, test
//!   harness included (`mindbot-agent bench rooms`, agent/src/bench/rooms.rs);
//!   debug build 0.6 MB and ~1.3%.
//!   Most of the CPU is Opus and the kernel's UDP path. Getting under 1%
//!   took Opus's CELT mode (see `audio.rs`), a small WebSocket read buffer
//!   (`transport/signal.rs`), handling due timeouts without a runtime round
//!   trip (`transport/peer.rs`) and waking PCM writers at half capacity.
//!
//! Why str0m, and what it leaves to us: `transport` and `ice`; what ICE
//! does not cover yet: the gaps listed in `ice`.

mod audio;
mod data;
mod engine;
mod error;
mod events;
mod handle;
mod heard;
mod participants;
mod streams;

use std::time::{Duration, Instant};

use livekit_protocol::signal_response::Message as Msg;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

pub use crate::ice::IcePolicy;
pub use audio::{AudioFrame, AudioSource, AudioStream, FrameOrigin, FRAME_DURATION, FRAME_SAMPLES, SAMPLE_RATE};
pub use error::RoomError;
pub use events::{
    ConnectionState, DataMessage, DisconnectReason, OutgoingData, RemoteParticipant, RoomEvent, RoomEvents,
    TrackDescription, TrackKind,
};
pub use handle::Room;
pub use heard::AudioHeard;
pub use streams::{StreamLimits, TextStream, TextStreamOptions, TextStreamWriter, CHUNK_BYTES};

use crate::transport::signal::{JoinMode, SignalConn};
use engine::Engine;

/// How long gathering may hold up a join that has host candidates anyway.
const GATHER_LIMIT: Duration = Duration::from_secs(1);

/// How a room is joined.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Subscribe to every remote audio track (video is never subscribed).
    pub subscribe_audio: bool,
    /// Deadline for the whole join (signaling, join response, media up); also
    /// the deadline of each resume attempt.
    pub join_timeout: Duration,
    /// How much PCM an `AudioSource` holds before `push` waits.
    pub audio_buffer: Duration,
    /// Opus encoder complexity (0 to 10) of the tracks we publish: 5 by
    /// default, for speech; 0 takes about 40% of its CPU per frame (33
    /// against 86 µs in one measurement here), for a test tone or a load
    /// generator that sends hundreds of tracks.
    pub opus_complexity: i32,
    /// Decoded frames held per remote track before new ones are dropped.
    pub audio_stream_frames: usize,
    /// User data packets held before new ones are dropped (and counted in
    /// `mindbot_room_data_dropped_total`); presence and other room events
    /// are never dropped.
    pub event_capacity: usize,
    /// Root certificates (DER) trusted for `wss://` besides Mozilla's roots,
    /// e.g. a private CA in front of a self-hosted server.
    pub extra_root_certificates: Vec<Vec<u8>>,
    /// Which ICE candidates we offer.
    pub ice_policy: IcePolicy,
    /// Bounds on incoming text streams (unfinished ones held, bytes per stream).
    pub stream_limits: StreamLimits,
    /// Answer RPC requests as LiveKit's client SDKs do (an acknowledgement,
    /// then "method not supported": we register no methods). Off plays a
    /// client without RPC, as SDKs before late 2024 were.
    pub answer_rpc: bool,
    /// Plays a client whose data channels open late (its server under
    /// load): packets that arrive before this long after the join are held,
    /// then handled in order, RPC requests included, as if they had
    /// arrived then. `None` (the default) handles each on arrival.
    pub data_opens_after: Option<Duration>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            subscribe_audio: true,
            join_timeout: Duration::from_secs(10),
            audio_buffer: Duration::from_secs(2),
            opus_complexity: 5,
            audio_stream_frames: 50,
            event_capacity: 256,
            extra_root_certificates: Vec::new(),
            ice_policy: IcePolicy::All,
            stream_limits: StreamLimits::default(),
            answer_rpc: true,
            data_opens_after: None,
        }
    }
}

/// Joins the room the token names, at the LiveKit server at `url`
/// (`ws://`, `wss://`, `http://` or `https://`).
#[tracing::instrument(skip_all, fields(url = url))]
pub async fn connect(url: &str, token: &str, options: ConnectOptions) -> Result<(Room, RoomEvents), RoomError> {
    let started = Instant::now();
    let timeout = options.join_timeout;
    let mut signal = SignalConn::open(url, token, &JoinMode::Fresh, timeout, &options.extra_root_certificates).await?;
    let join = match tokio::time::timeout(timeout.saturating_sub(started.elapsed()), signal.recv()).await {
        Err(_) => return Err(RoomError::Timeout { step: "the join response", after: timeout }),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(None)) => return Err(RoomError::Signal("the server closed the connection before joining".into())),
        Ok(Ok(Some(Msg::Join(join)))) => join,
        Ok(Ok(Some(Msg::Leave(leave)))) => {
            return Err(RoomError::JoinRefused(DisconnectReason::from_server(leave.reason)))
        }
        Ok(Ok(Some(other))) => return Err(RoomError::Signal(format!("expected a join response, got {other:?}"))),
    };
    let local = join.participant.clone().unwrap_or_default();
    let room = join.room.clone().unwrap_or_default();
    tracing::info!(room = %room.name, identity = %local.identity, sid = %local.sid, "joined; connecting media");

    let (events_tx, events_rx) = events::queues(options.event_capacity.max(16));
    let (commands_tx, commands_rx) = mpsc::channel(32);
    let (ready_tx, ready_rx) = oneshot::channel();
    // A reflexive address is a nicety next to the host candidate; a relay the
    // caller insisted on is worth more of the join's time.
    let gather_limit = match options.ice_policy {
        IcePolicy::All => (timeout / 3).min(GATHER_LIMIT),
        IcePolicy::RelayOnly => timeout / 3,
    };
    let mut engine = Engine::new(url, token, options, &join, signal, events_tx, commands_rx, ready_tx)?;
    let heard = engine.audio_heard();
    engine.gather_candidates(&join.ice_servers, Instant::now() + gather_limit).await?;
    engine.apply_participants(&join.other_participants).await;
    // Offer the publisher now rather than on first use, so data can be sent at once.
    engine.negotiate_publisher().await;
    let span = tracing::info_span!("room", room = %room.name, identity = %local.identity);
    let task = tokio::spawn(engine.run().instrument(span));
    let room_handle = Room {
        commands: commands_tx,
        task: Some(task),
        room_name: room.name,
        room_sid: room.sid,
        identity: local.identity,
        sid: local.sid,
        heard,
    };
    match tokio::time::timeout(timeout.saturating_sub(started.elapsed()), ready_rx).await {
        Ok(Ok(())) => {
            tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "media connected");
            Ok((room_handle, events_rx))
        }
        // The engine ended before media came up; its reason is the last event.
        Ok(Err(_)) => {
            let mut events = events_rx;
            while let Some(event) = events.recv().await {
                if let RoomEvent::Disconnected { reason } = event {
                    return Err(RoomError::JoinRefused(reason));
                }
            }
            Err(RoomError::Closed)
        }
        Err(_) => {
            let _ = room_handle.leave().await;
            Err(RoomError::Timeout { step: "the media connection (ICE and DTLS)", after: timeout })
        }
    }
}
