//! The one task that runs a participant: signaling, both peer connections,
//! audio pacing and keepalive, in a single `select!` loop.
//!
//! One task per participant is the point of using a sans-IO stack: no
//! per-connection thread or task forest, nothing shared but the command
//! channel, the event channel and the PCM queues. The `Room` handle talks to
//! it through `Command`s; it reports through `RoomEvent`s.
//!
//! The engine composes parts that each own their state: [`Signaling`]
//! (connection, resume, pending requests), two `Peer`s (the transport
//! layer), [`Publisher`] (our offers, data channels, tracks and audio
//! pacing), [`Subscriber`] (remote media and channels), [`Keepalive`],
//! [`MediaState`] (is media up, since when down), `Participants` and the
//! text stream `Reassembler`. Server messages are handled in `dispatch.rs`,
//! str0m's events in `media.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use livekit_protocol::{self as proto, signal_request};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::ice::{gather, IcePolicy};
use crate::room::audio::AudioSource;
use crate::room::events::EventSender;
use crate::room::participants::Participants;
use crate::room::streams::Reassembler;
use crate::room::{AudioHeard, ConnectOptions, ConnectionState, DisconnectReason, OutgoingData, RoomError, RoomEvent};
use crate::transport::peer::Peer;
use crate::transport::signal::SignalConn;

mod dispatch;
mod keepalive;
mod media;
mod publisher;
mod signaling;
mod subscriber;

use keepalive::Keepalive;
use media::MediaState;
use publisher::Publisher;
use signaling::{Heard, Resumed, Signaling};
use subscriber::Subscriber;

/// What the `Room` handle asks of the engine.
/// LiveKit RPC's built-in error codes for a method with no handler and
/// for a request version the callee does not speak.
const RPC_UNSUPPORTED_METHOD: u32 = 1400;
const RPC_UNSUPPORTED_VERSION: u32 = 1404;

pub(crate) enum Command {
    SendData {
        data: OutgoingData,
        done: oneshot::Sender<Result<(), RoomError>>,
    },
    /// A data stream part, on the reliable channel.
    SendPacket {
        value: proto::data_packet::Value,
        destinations: Vec<String>,
        sender_identity: String,
        done: oneshot::Sender<Result<(), RoomError>>,
    },
    PublishAudio {
        name: String,
        done: oneshot::Sender<Result<AudioSource, RoomError>>,
    },
    UpdateLocal {
        update: proto::UpdateParticipantMetadata,
        done: oneshot::Sender<Result<(), RoomError>>,
    },
    Leave {
        done: oneshot::Sender<()>,
    },
    DropSignal,
}

/// A data packet received before the data channel counts as open, and
/// whether it came on the reliable channel.
type HeldPacket = (Vec<u8>, bool);

/// A participant's connection to its room, run by one task.
pub(crate) struct Engine {
    options: ConnectOptions,
    signaling: Signaling,
    sub: Peer,
    publ: Peer,
    participants: Participants,
    streams: Reassembler,
    publisher: Publisher,
    subscriber: Subscriber,
    keepalive: Keepalive,
    media: MediaState,
    /// Wakes the loop when PCM arrives on an idle track.
    audio_wake: Arc<Notify>,
    /// When each remote participant's audio last arrived.
    heard: AudioHeard,
    events: EventSender,
    commands: mpsc::Receiver<Command>,
    /// Resolved once both connections carry media and data.
    ready: Option<oneshot::Sender<()>>,
    /// Set by a handler when the room is over.
    finished: Option<DisconnectReason>,
    /// Data packets held until the instant `options.data_opens_after` sets.
    data_held: Option<(Instant, Vec<HeldPacket>)>,
}

impl Engine {
    /// An engine for the participant `join` describes, on `signal`, with both
    /// peer connections bound on the interface that routes to the server.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        url: &str,
        token: &str,
        options: ConnectOptions,
        join: &proto::JoinResponse,
        signal: SignalConn,
        events: EventSender,
        commands: mpsc::Receiver<Command>,
        ready: oneshot::Sender<()>,
    ) -> Result<Engine, RoomError> {
        let now = Instant::now();
        let local_ip = signal.local_ip()?;
        let ice_servers: Vec<&str> = join.ice_servers.iter().flat_map(|s| s.urls.iter().map(String::as_str)).collect();
        tracing::debug!(?ice_servers, subscriber_primary = join.subscriber_primary, "join response");
        let local_sid = join.participant.as_ref().map(|p| p.sid.clone()).unwrap_or_default();
        let policy = options.ice_policy;
        let (timeout, roots) = (options.join_timeout, options.extra_root_certificates.clone());
        Ok(Engine {
            signaling: Signaling::new(signal, url, token, local_sid.clone(), timeout, roots),
            sub: Peer::new(local_ip, proto::SignalTarget::Subscriber, policy, now)?,
            publ: Peer::new(local_ip, proto::SignalTarget::Publisher, policy, now)?,
            participants: Participants::new(local_sid),
            streams: Reassembler::new(options.stream_limits),
            publisher: Publisher::default(),
            subscriber: Subscriber::default(),
            keepalive: Keepalive::new(join, now),
            media: MediaState::new(join.subscriber_primary),
            audio_wake: Arc::new(Notify::new()),
            heard: AudioHeard::default(),
            events,
            commands,
            ready: Some(ready),
            finished: None,
            data_held: options.data_opens_after.map(|after| (now + after, Vec::new())),
            options,
        })
    }

    /// The map of when each remote participant's audio last arrived.
    pub(crate) fn audio_heard(&self) -> AudioHeard {
        self.heard.clone()
    }

    /// Asks the join response's STUN and TURN servers for candidates on both
    /// connections at once, until `deadline`, and adds what they give.
    pub(crate) async fn gather_candidates(
        &mut self,
        servers: &[proto::IceServer],
        deadline: Instant,
    ) -> Result<(), RoomError> {
        let policy = self.options.ice_policy;
        let servers = gather::usable_servers(servers, self.sub.local_addr().ip()).await;
        tracing::debug!(?servers, "ICE servers");
        let (sub, publ) = if servers.is_empty() {
            Default::default()
        } else {
            // A relay on both connections only when asked for: host candidates reach LiveKit otherwise.
            let want_relay = policy == IcePolicy::RelayOnly;
            tokio::join!(
                gather::gather(self.sub.socket(), &servers, want_relay, deadline),
                gather::gather(self.publ.socket(), &servers, want_relay, deadline)
            )
        };
        self.sub.add_gathered(sub, policy)?;
        self.publ.add_gathered(publ, policy)
    }

    /// Runs until the room ends, then reports `Disconnected` and closes everything.
    pub(crate) async fn run(mut self) {
        let reason = match self.run_loop().await {
            Ok(reason) => reason,
            Err(e) => {
                tracing::warn!(error = %e, "room connection failed");
                DisconnectReason::Failed(e.to_string())
            }
        };
        tracing::info!(?reason, "left the room");
        self.publisher.close_tracks();
        self.sub.rtc().disconnect();
        self.publ.rtc().disconnect();
        self.signaling.close().await;
        // The last event; its queue never drops it.
        self.events.emit(RoomEvent::Disconnected { reason });
    }

    async fn run_loop(&mut self) -> Result<DisconnectReason, RoomError> {
        loop {
            self.pump()?;
            if let Some(reason) = self.finished.take() {
                return Ok(reason);
            }
            let deadline = tokio::time::Instant::from_std(self.next_deadline());
            let audio_idle = self.publisher.audio_idle();
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command).await,
                    // The `Room` handle was dropped: leave as if asked.
                    None => self.leave(DisconnectReason::ClientInitiated).await,
                },
                heard = self.signaling.next() => match heard {
                    Heard::Message(Ok(Some(message))) => {
                        self.keepalive.heard(Instant::now());
                        self.on_signal(message).await?;
                    }
                    Heard::Message(Ok(None)) => self.signal_lost("the server closed the signaling connection"),
                    Heard::Message(Err(e)) => self.signal_lost(&e.to_string()),
                    Heard::Resumed(resumed) => self.on_resumed(resumed).await,
                },
                received = self.sub.recv() => self.sub.handle_received(Instant::now(), received),
                received = self.publ.recv() => self.publ.handle_received(Instant::now(), received),
                _ = self.audio_wake.notified(), if audio_idle => self.publisher.wake_tracks(Instant::now()),
                _ = tokio::time::sleep_until(deadline) => self.on_timers().await?,
            }
        }
    }

    /// The earliest moment something is due.
    fn next_deadline(&self) -> Instant {
        let mut at = self.sub.next_timeout().min(self.publ.next_timeout());
        at = at.min(self.keepalive.next_deadline(self.signaling.is_connected()));
        if let Some(limit) = self.media.give_up_at() {
            at = at.min(limit);
        }
        if let Some(tick) = self.publisher.next_tick() {
            at = at.min(tick);
        }
        if let Some((open_at, _)) = &self.data_held {
            at = at.min(*open_at);
        }
        at
    }

    async fn on_timers(&mut self) -> Result<(), RoomError> {
        let now = Instant::now();
        // Audio first: the timeouts below then let the pacer release it in this same wake.
        if self.publisher.send_due_audio(self.publ.rtc(), now)? {
            self.heard.sent(now);
        }
        self.sub.handle_timeout(now)?;
        self.publ.handle_timeout(now)?;
        if self.signaling.is_connected() && self.keepalive.silent(now) {
            self.signal_lost("no answer to pings");
        }
        if let Some(ping) = self.keepalive.ping_due(now, unix_millis()) {
            if self.signaling.is_connected() {
                self.send(signal_request::Message::PingReq(ping)).await;
            }
        }
        if self.media.give_up_at().is_some_and(|at| now >= at) {
            self.finished = Some(DisconnectReason::MediaFailure);
        }
        if self.data_held.as_ref().is_some_and(|(open_at, _)| now >= *open_at) {
            let (_, held) = self.data_held.take().expect("checked above");
            for (bytes, reliable) in held {
                self.on_data(&bytes, reliable);
            }
        }
        Ok(())
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::SendData { data, done } => {
                let _ = done.send(self.send_data(&data));
            }
            Command::SendPacket { value, destinations, sender_identity, done } => {
                let sequence = self.publisher.next_sequence();
                let bytes = crate::room::data::encode_value(value, destinations, sender_identity, sequence);
                let _ = done.send(self.write_data(true, |_| bytes));
            }
            Command::PublishAudio { name, done } => self.request_audio_track(name, done).await,
            Command::UpdateLocal { update, done } => {
                if let Some(request) = self.signaling.request(update, done) {
                    self.send(request).await;
                }
            }
            Command::Leave { done } => {
                self.leave(DisconnectReason::ClientInitiated).await;
                let _ = done.send(());
            }
            Command::DropSignal => {
                if self.signaling.drop_connection() {
                    self.signal_lost("dropped on request");
                }
            }
        }
    }

    /// Tells the server we leave and marks the room finished.
    async fn leave(&mut self, reason: DisconnectReason) {
        let leave = proto::LeaveRequest {
            reason: proto::DisconnectReason::ClientInitiated as i32,
            action: proto::leave_request::Action::Disconnect as i32,
            ..Default::default()
        };
        self.send(signal_request::Message::Leave(leave)).await;
        self.finished = Some(reason);
    }

    /// Sends on the signaling connection if there is one; a failure starts a resume.
    async fn send(&mut self, message: signal_request::Message) {
        if let Err(e) = self.signaling.send(message).await {
            self.signal_lost(&e.to_string());
        }
    }

    /// Emits an event without ever blocking the media loop (see [`EventSender::emit`]).
    fn emit(&self, event: RoomEvent) {
        self.events.emit(event);
    }

    /// The signaling connection is gone: resume in the background while media goes on.
    fn signal_lost(&mut self, why: &str) {
        if self.signaling.is_resuming() || self.finished.is_some() {
            return;
        }
        tracing::info!(why, "signaling connection lost; resuming");
        // Answers to requests sent on the old connection will not come.
        self.signaling.lose();
        self.publisher.fail_requests(|| RoomError::Signal("signaling connection lost; try again".into()));
        self.emit(RoomEvent::ConnectionState(ConnectionState::Reconnecting));
    }

    async fn on_resumed(&mut self, resumed: Resumed) {
        match resumed {
            Ok((signal, first)) => {
                tracing::info!("signaling resumed");
                self.signaling.resumed_on(signal);
                self.keepalive.heard(Instant::now());
                // A new ICE session on the publisher, as LiveKit's SDKs do after a resume.
                self.publisher.restart_ice();
                if let Err(e) = self.on_signal(first).await {
                    tracing::warn!(error = %e, "first message after resume");
                }
                self.negotiate_publisher().await;
                if self.finished.is_none() {
                    self.emit(RoomEvent::ConnectionState(ConnectionState::Reconnected));
                }
            }
            Err(RoomError::JoinRefused(reason)) => self.finished = Some(reason),
            Err(e) => {
                tracing::warn!(error = %e, "could not resume the signaling connection");
                self.finished = Some(DisconnectReason::SignalLost);
            }
        }
    }

    /// Writes a packet on our reliable or lossy data channel; `encode` makes
    /// it once the channel is known to be open.
    fn write_data(&mut self, reliable: bool, encode: impl FnOnce(&mut Publisher) -> Vec<u8>) -> Result<(), RoomError> {
        let id = self.publisher.channel(reliable);
        let mut channel = id.and_then(|id| self.publ.rtc().channel(id)).ok_or(RoomError::DataChannelClosed)?;
        let bytes = encode(&mut self.publisher);
        match channel.write(true, &bytes)? {
            true => Ok(()),
            false => Err(RoomError::DataChannelFull),
        }
    }

    /// Handles a packet received on a data channel: user data goes out as
    /// an event, stream parts to the reassembler (a whole stream goes out).
    fn on_data(&mut self, bytes: &[u8], reliable: bool) {
        if let Some((_, held)) = &mut self.data_held {
            held.push((bytes.to_vec(), reliable));
            return;
        }
        match crate::room::data::decode(bytes, reliable) {
            Some(crate::room::data::Received::User(message)) => self.emit(RoomEvent::Data(message)),
            Some(crate::room::data::Received::Stream(sender, part)) => {
                if let Some(stream) = self.streams.push(&sender, part, Instant::now()) {
                    self.emit(RoomEvent::TextStream(stream));
                }
            }
            Some(crate::room::data::Received::RpcRequest { from, id, version }) => self.answer_rpc(from, id, version),
            Some(crate::room::data::Received::RpcReceipt { from, id }) => {
                self.emit(RoomEvent::RpcReceipt { from, request_id: id })
            }
            None => {}
        }
    }

    /// Answers an RPC request as LiveKit's client SDKs do for a method with
    /// no handler (we register none): an acknowledgement, so the caller
    /// knows it arrived, then the `UNSUPPORTED_METHOD` error (or
    /// `UNSUPPORTED_VERSION` for a version other than 1). Best effort: a
    /// full channel drops the answer, as it would any reliable packet.
    fn answer_rpc(&mut self, caller: String, id: String, version: u32) {
        use proto::data_packet::Value;
        if caller.is_empty() || !self.options.answer_rpc {
            return;
        }
        let (code, message) = match version {
            1 => (RPC_UNSUPPORTED_METHOD, "Method not supported at destination"),
            _ => (RPC_UNSUPPORTED_VERSION, "Unsupported RPC version"),
        };
        let ack = Value::RpcAck(proto::RpcAck { request_id: id.clone() });
        let error = proto::RpcError { code, message: message.to_string(), data: String::new() };
        let response = Value::RpcResponse(proto::RpcResponse {
            request_id: id,
            value: Some(proto::rpc_response::Value::Error(error)),
        });
        for value in [ack, response] {
            let to = vec![caller.clone()];
            let sent = self.write_data(true, |publisher| {
                crate::room::data::encode_value(value, to, String::new(), publisher.next_sequence())
            });
            if let Err(e) = sent {
                tracing::debug!(error = %e, caller, "RPC answer not sent");
                return;
            }
        }
    }

    /// Sends a user data packet on the publisher's channel.
    fn send_data(&mut self, data: &OutgoingData) -> Result<(), RoomError> {
        self.write_data(data.reliable, |publisher| crate::room::data::encode(data, publisher.next_sequence()))
    }

    /// Sends `AddTrackRequest`; the reply continues in `on_track_published`.
    async fn request_audio_track(&mut self, name: String, done: oneshot::Sender<Result<AudioSource, RoomError>>) {
        let cid = format!("TR_mb{:08x}", random_u32());
        let request = proto::AddTrackRequest {
            cid: cid.clone(),
            name,
            r#type: proto::TrackType::Audio as i32,
            source: proto::TrackSource::Microphone as i32,
            disable_red: true,
            ..Default::default()
        };
        self.publisher.track_requested(cid, done);
        self.send(signal_request::Message::AddTrack(request)).await;
    }
}

pub(crate) fn unix_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A random number for client track ids (std's hasher keys are randomly seeded).
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u32
}

/// How long the media may stay down before the room counts as failed.
const MEDIA_DOWN_LIMIT: Duration = Duration::from_secs(20);
