//! The agent's seat in a LiveKit room: signaling, WebRTC media and data,
//! without LiveKit's libwebrtc-based client.
//!
//! `connect` opens LiveKit's `/rtc` signaling WebSocket, answers the
//! server's subscriber offer, offers a publisher connection with the
//! `_reliable` and `_lossy` data channels, and returns once both are up.
//! The `Room` handle then sends data and text streams (LiveKit's data
//! streams, `streams.rs`), publishes an Opus microphone track fed with PCM,
//! sets attributes and leaves; `RoomEvents` brings participants, tracks,
//! data, whole text streams, decoded remote audio and the reason the room
//! ended.
//! This module must not know about sessions, billing or personas.
//!
//! # Why str0m
//! The WebRTC stack is `str0m` (sans-IO): each participant is one tokio task
//! owning two `Rtc` values and two UDP sockets, with no task or thread per
//! connection, transport or timer, so its cost is the packets it handles.
//! Measured on this machine against LiveKit 1.13.5 on loopback:
//! - join to both connections ICE-connected with both data channels open:
//!   about 0.1 s; still listed by the server after 90 s (it drops
//!   participants that never become active after about a minute);
//! - 20 participants in one process (10 rooms, each with two participants
//!   sending an Opus tone to each other and decoding what they hear), release
//!   build: 0.6 MB of RSS and 0.75-0.85% of a core per participant, test
//!   harness included (now `mindbot-agent bench rooms`,
//!   agent/src/bench/rooms.rs); debug build 0.6 MB and ~1.3%.
//!   Most of the CPU is Opus and the kernel's UDP path. Getting under 1%
//!   took Opus's CELT mode (see `audio.rs`), a small WebSocket read buffer
//!   (`signal.rs`), handling due timeouts without a runtime round trip
//!   (`peer.rs`) and waking PCM writers at half capacity.
//!
//! webrtc-rs 0.17 (the pion-like API) was not tried within the time-boxed
//! spike: str0m passed it first, and webrtc-rs runs a set of tasks, buffers
//! and timers per peer connection (ICE agent, DTLS, SCTP, interceptors),
//! the kind of fixed cost the 5 MB / 1% per participant target is about.
//! The price of str0m: it has no STUN/TURN client, so we carry a small one.
//! Before media starts, `gather.rs` asks the join response's ICE servers
//! (UDP only) for a server-reflexive address (STUN Binding) and, with
//! `IcePolicy::RelayOnly`, a TURN relay (Allocate with long-term
//! credentials); `relay.rs` then carries the relayed candidate's packets in
//! Send/Data indications, installs permissions for the server's candidates
//! and refreshes both. With `IcePolicy::All` the host candidate stays, which
//! is what a worker beside LiveKit uses. `wss://` signaling runs on rustls
//! with the same aws-lc-rs provider (`signal.rs`). str0m 0.24 is used because
//! 0.25's crypto back-ends other than aws-lc-rs are not published; 0.24 with
//! aws-lc-rs also keeps the workspace's Rust 1.85.
//!
//! # Gaps
//! - TURN over TCP or TLS (`turn:?transport=tcp`, `turns:`) and `stuns:` are
//!   skipped; only UDP servers are used. No ChannelBind (4 bytes less per
//!   packet than Send indications).
//! - A relay is allocated only for `RelayOnly`; with `All` the TURN server
//!   serves as STUN only (a relay fallback when host and reflexive fail
//!   would need gathering in the background).
//! - Gathering happens once, at join, before media starts: up to 1 s with
//!   `All` (an unanswering STUN server delays every join by that much), up
//!   to a third of the join timeout with `RelayOnly`; a resume keeps the
//!   candidates (and allocation) it had.
//! - A relay-only join takes about 2 s on the subscriber connection: the
//!   server's ICE agent (pion, controlling) waits 2 s before nominating a
//!   relayed pair (its relay acceptance wait); the publisher, where we
//!   nominate, connects at once.
//! - The relay permits the IPs of the server's candidates: a server whose
//!   packets come from another address (behind 1:1 NAT) is not reachable
//!   through it.
//! - A socket on a loopback address only uses loopback ICE servers and never
//!   resolves names (so tests stay on 127.0.0.1).

mod audio;
mod data;
mod dispatch;
mod engine;
mod error;
mod events;
mod gather;
mod handle;
mod media;
mod participants;
mod peer;
mod relay;
mod signal;
mod streams;
mod stun;

use std::sync::Arc;
use std::time::{Duration, Instant};

use livekit_protocol::{self as proto, signal_response::Message as Msg};
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::Instrument;

pub use audio::{AudioFrame, AudioSource, AudioStream, FRAME_DURATION, FRAME_SAMPLES, SAMPLE_RATE};
pub use error::RoomError;
pub use events::{
    ConnectionState, DataMessage, DisconnectReason, OutgoingData, RemoteParticipant, RoomEvent, RoomEvents,
    TrackDescription, TrackKind,
};
pub use handle::Room;
pub use streams::{StreamLimits, TextStream, TextStreamOptions, TextStreamWriter, CHUNK_BYTES};

use engine::{Engine, Keepalive, Publisher, Subscriber};
use participants::Participants;
use peer::Peer;
use signal::{JoinMode, SignalConn};

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
}

/// Which local ICE candidates are offered to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IcePolicy {
    /// Host, server-reflexive (from the join response's STUN servers) and relayed (TURN).
    #[default]
    All,
    /// Only a TURN relay; joining fails if no TURN server gives one.
    RelayOnly,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            subscribe_audio: true,
            join_timeout: Duration::from_secs(10),
            audio_buffer: Duration::from_secs(2),
            audio_stream_frames: 50,
            event_capacity: 256,
            extra_root_certificates: Vec::new(),
            ice_policy: IcePolicy::All,
            stream_limits: StreamLimits::default(),
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
    let mut engine = new_engine(url, token, options, &join, signal, events_tx, commands_rx, ready_tx)?;
    // A reflexive address is a nicety next to the host candidate; a relay the
    // caller insisted on is worth more of the join's time.
    let gather_limit = match engine.options.ice_policy {
        IcePolicy::All => (timeout / 3).min(GATHER_LIMIT),
        IcePolicy::RelayOnly => timeout / 3,
    };
    gather_candidates(&mut engine, &join.ice_servers, Instant::now() + gather_limit).await?;
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

/// Asks the join response's STUN and TURN servers for candidates on both
/// connections at once, until `deadline`.
async fn gather_candidates(
    engine: &mut Engine,
    servers: &[proto::IceServer],
    deadline: Instant,
) -> Result<(), RoomError> {
    let policy = engine.options.ice_policy;
    let servers = gather::usable_servers(
        servers,
        engine.sub.socket.local_addr().map_err(|e| RoomError::Rtc(e.to_string()))?.ip(),
    )
    .await;
    tracing::debug!(?servers, "ICE servers");
    let (sub, publ) = if servers.is_empty() {
        Default::default()
    } else {
        // A relay on both connections only when asked for: host candidates reach LiveKit otherwise.
        let want_relay = policy == IcePolicy::RelayOnly;
        tokio::join!(
            gather::gather(&engine.sub.socket, &servers, want_relay, deadline),
            gather::gather(&engine.publ.socket, &servers, want_relay, deadline)
        )
    };
    engine.sub.add_gathered(sub, policy)?;
    engine.publ.add_gathered(publ, policy)
}

#[allow(clippy::too_many_arguments)]
fn new_engine(
    url: &str,
    token: &str,
    options: ConnectOptions,
    join: &proto::JoinResponse,
    signal: SignalConn,
    events: events::EventSender,
    commands: mpsc::Receiver<engine::Command>,
    ready: oneshot::Sender<()>,
) -> Result<Engine, RoomError> {
    let now = Instant::now();
    let local_ip = signal.local_ip()?;
    let secs = |s: i32, default: u64| Duration::from_secs(if s > 0 { s as u64 } else { default });
    let ice_servers: Vec<&str> = join.ice_servers.iter().flat_map(|s| s.urls.iter().map(String::as_str)).collect();
    tracing::debug!(?ice_servers, subscriber_primary = join.subscriber_primary, "join response");
    let local_sid = join.participant.as_ref().map(|p| p.sid.clone()).unwrap_or_default();
    let policy = options.ice_policy;
    let stream_limits = options.stream_limits;
    Ok(Engine {
        url: url.to_string(),
        token: token.to_string(),
        options,
        local_sid: local_sid.clone(),
        signal: Some(signal),
        resuming: None,
        sub: Peer::new(local_ip, proto::SignalTarget::Subscriber, policy, now)?,
        publ: Peer::new(local_ip, proto::SignalTarget::Publisher, policy, now)?,
        sub_buf: engine::datagram_buffer(),
        pub_buf: engine::datagram_buffer(),
        participants: Participants::new(local_sid),
        streams: streams::Reassembler::new(stream_limits),
        publisher: Publisher::default(),
        subscriber: Subscriber::default(),
        keepalive: Keepalive {
            interval: secs(join.ping_interval, 5),
            timeout: secs(join.ping_timeout, 15),
            next_ping: now,
            last_heard: now,
            rtt_ms: 0,
        },
        audio_wake: Arc::new(Notify::new()),
        requests: Default::default(),
        next_request_id: 0,
        events,
        commands,
        ready: Some(ready),
        sub_up: false,
        subscriber_primary: join.subscriber_primary,
        pub_up: false,
        media_down_since: None,
        finished: None,
    })
}
