//! The one task that runs a participant: signaling, both peer connections,
//! audio pacing and keepalive, in a single `select!` loop.
//!
//! One task per participant is the point of using a sans-IO stack: no
//! per-connection thread or task forest, nothing shared but the command
//! channel, the event channel and the PCM queues. The `Room` handle talks to
//! it through `Command`s; it reports through `RoomEvent`s. Server messages
//! are handled in `dispatch.rs`, str0m's events in `media.rs`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use livekit_protocol::{self as proto, signal_request};
use str0m::change::SdpPendingOffer;
use str0m::channel::ChannelId;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use crate::room::audio::{AudioSource, Decoder, Encoder};
use crate::room::events::EventSender;
use crate::room::participants::Participants;
use crate::room::peer::{Peer, MAX_DATAGRAM};
use crate::room::signal::{JoinMode, SignalConn};
use crate::room::{ConnectOptions, ConnectionState, DisconnectReason, OutgoingData, RoomError, RoomEvent};

/// Resume attempts after the signaling connection drops, and the wait before each.
const RESUME_BACKOFF: [Duration; 3] = [Duration::from_millis(200), Duration::from_secs(1), Duration::from_secs(3)];
/// How long the media may stay down before the room counts as failed.
const MEDIA_DOWN_LIMIT: Duration = Duration::from_secs(20);

/// What the `Room` handle asks of the engine.
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

/// A track we publish, from `AddTrackRequest` to media flowing.
pub(crate) struct Outgoing {
    pub(crate) cid: String,
    pub(crate) mid: Option<str0m::media::Mid>,
    pub(crate) source: AudioSource,
    pub(crate) encoder: Encoder,
    /// Waiting for the server's answer that carries this track.
    pub(crate) done: Option<oneshot::Sender<Result<AudioSource, RoomError>>>,
    /// RTP time of the next frame, in 48 kHz samples.
    pub(crate) rtp_samples: u64,
    /// When the next frame is due; `None` while the queue is empty.
    pub(crate) next_tick: Option<Instant>,
    pub(crate) last_sent: Option<Instant>,
}

/// Publisher-side negotiation state (we offer, the server answers).
#[derive(Default)]
pub(crate) struct Publisher {
    pub(crate) pending: Option<SdpPendingOffer>,
    /// Changes arrived while an offer was out: offer again after the answer.
    pub(crate) again: bool,
    pub(crate) ice_restart: bool,
    pub(crate) offer_id: u32,
    pub(crate) reliable: Option<ChannelId>,
    pub(crate) lossy: Option<ChannelId>,
    pub(crate) data_sequence: u32,
    pub(crate) tracks: Vec<Outgoing>,
    /// Tracks asked for (`AddTrackRequest` sent) by cid, awaiting `TrackPublished`.
    pub(crate) requested: HashMap<String, oneshot::Sender<Result<AudioSource, RoomError>>>,
}

/// Subscriber-side state (the server offers, we answer).
#[derive(Default)]
pub(crate) struct Subscriber {
    pub(crate) mid_to_track: HashMap<String, String>,
    pub(crate) decoders: HashMap<str0m::media::Mid, Decoder>,
    pub(crate) channels: HashMap<ChannelId, bool>,
}

/// Signaling keepalive per the join response.
pub(crate) struct Keepalive {
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) next_ping: Instant,
    pub(crate) last_heard: Instant,
    pub(crate) rtt_ms: i64,
}

pub(crate) struct Engine {
    pub(crate) url: String,
    pub(crate) token: String,
    pub(crate) options: ConnectOptions,
    pub(crate) local_sid: String,
    pub(crate) signal: Option<SignalConn>,
    pub(crate) resuming: Option<JoinHandle<Result<(SignalConn, proto::signal_response::Message), RoomError>>>,
    pub(crate) sub: Peer,
    pub(crate) publ: Peer,
    pub(crate) sub_buf: Vec<u8>,
    pub(crate) pub_buf: Vec<u8>,
    pub(crate) participants: Participants,
    pub(crate) streams: crate::room::streams::Reassembler,
    pub(crate) publisher: Publisher,
    pub(crate) subscriber: Subscriber,
    pub(crate) keepalive: Keepalive,
    pub(crate) audio_wake: std::sync::Arc<Notify>,
    pub(crate) requests: HashMap<u32, oneshot::Sender<Result<(), RoomError>>>,
    pub(crate) next_request_id: u32,
    pub(crate) events: EventSender,
    pub(crate) commands: mpsc::Receiver<Command>,
    /// Resolved once both connections carry media and data.
    pub(crate) ready: Option<oneshot::Sender<()>>,
    pub(crate) sub_up: bool,
    /// Whether the server sends us media and data on the subscriber connection.
    pub(crate) subscriber_primary: bool,
    pub(crate) pub_up: bool,
    pub(crate) media_down_since: Option<Instant>,
    /// Set by a handler when the room is over.
    pub(crate) finished: Option<DisconnectReason>,
}

impl Engine {
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
        for track in &self.publisher.tracks {
            track.source.queue.close();
        }
        self.sub.rtc.disconnect();
        self.publ.rtc.disconnect();
        if let Some(resuming) = self.resuming.take() {
            resuming.abort();
        }
        if let Some(signal) = self.signal.take() {
            signal.close().await;
        }
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
            let audio_idle = self.publisher.tracks.iter().any(|t| t.mid.is_some() && t.next_tick.is_none());
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command).await,
                    // The `Room` handle was dropped: leave as if asked.
                    None => self.leave(DisconnectReason::ClientInitiated).await,
                },
                message = recv_signal(&mut self.signal) => match message {
                    Ok(Some(message)) => {
                        self.keepalive.last_heard = Instant::now();
                        self.on_signal(message).await?;
                    }
                    Ok(None) => self.signal_lost("the server closed the signaling connection"),
                    Err(e) => self.signal_lost(&e.to_string()),
                },
                resumed = join_resume(&mut self.resuming) => self.on_resumed(resumed).await,
                received = self.sub.socket.recv_from(&mut self.sub_buf) => {
                    if let Ok((n, from)) = received {
                        self.sub.handle_datagram(Instant::now(), from, &self.sub_buf[..n]);
                    }
                }
                received = self.publ.socket.recv_from(&mut self.pub_buf) => {
                    if let Ok((n, from)) = received {
                        self.publ.handle_datagram(Instant::now(), from, &self.pub_buf[..n]);
                    }
                }
                _ = self.audio_wake.notified(), if audio_idle => self.wake_tracks(Instant::now()),
                _ = tokio::time::sleep_until(deadline) => self.on_timers().await?,
            }
        }
    }

    /// The earliest moment something is due.
    fn next_deadline(&self) -> Instant {
        let mut at = self.sub.next_timeout.min(self.publ.next_timeout).min(self.keepalive.next_ping);
        if self.signal.is_some() {
            at = at.min(self.keepalive.last_heard + self.keepalive.timeout);
        }
        if let Some(since) = self.media_down_since {
            at = at.min(since + MEDIA_DOWN_LIMIT);
        }
        for tick in self.publisher.tracks.iter().filter_map(|t| t.next_tick) {
            at = at.min(tick);
        }
        at
    }

    async fn on_timers(&mut self) -> Result<(), RoomError> {
        let now = Instant::now();
        // Audio first: the timeouts below then let the pacer release it in this same wake.
        self.send_due_audio(now)?;
        self.sub.handle_timeout(now)?;
        self.publ.handle_timeout(now)?;
        if self.signal.is_some() && now >= self.keepalive.last_heard + self.keepalive.timeout {
            self.signal_lost("no answer to pings");
        }
        if now >= self.keepalive.next_ping {
            self.keepalive.next_ping = now + self.keepalive.interval;
            if self.signal.is_some() {
                let ping = proto::Ping { timestamp: unix_millis(), rtt: self.keepalive.rtt_ms };
                self.send(signal_request::Message::PingReq(ping)).await;
            }
        }
        if self.media_down_since.is_some_and(|since| now >= since + MEDIA_DOWN_LIMIT) {
            self.finished = Some(DisconnectReason::MediaFailure);
        }
        Ok(())
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::SendData { data, done } => {
                let _ = done.send(self.send_data(&data));
            }
            Command::SendPacket { value, destinations, sender_identity, done } => {
                self.publisher.data_sequence = self.publisher.data_sequence.wrapping_add(1);
                let bytes =
                    crate::room::data::encode_value(value, destinations, sender_identity, self.publisher.data_sequence);
                let _ = done.send(self.write_reliable(&bytes));
            }
            Command::PublishAudio { name, done } => self.request_audio_track(name, done).await,
            Command::UpdateLocal { mut update, done } => {
                if self.signal.is_none() {
                    let _ = done.send(Err(RoomError::Signal("reconnecting; try again".into())));
                    return;
                }
                self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
                update.request_id = self.next_request_id;
                self.requests.insert(update.request_id, done);
                self.send(signal_request::Message::UpdateMetadata(update)).await;
            }
            Command::Leave { done } => {
                self.leave(DisconnectReason::ClientInitiated).await;
                let _ = done.send(());
            }
            Command::DropSignal => {
                if let Some(signal) = self.signal.take() {
                    drop(signal);
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
    pub(crate) async fn send(&mut self, message: signal_request::Message) {
        let Some(signal) = self.signal.as_mut() else {
            tracing::debug!("signaling down; message dropped");
            return;
        };
        if let Err(e) = signal.send(message).await {
            self.signal_lost(&e.to_string());
        }
    }

    /// Emits an event without ever blocking the media loop (see [`EventSender::emit`]).
    pub(crate) fn emit(&self, event: RoomEvent) {
        self.events.emit(event);
    }

    /// The signaling connection is gone: resume in the background while media goes on.
    pub(crate) fn signal_lost(&mut self, why: &str) {
        if self.resuming.is_some() || self.finished.is_some() {
            return;
        }
        tracing::info!(why, "signaling connection lost; resuming");
        self.signal = None;
        // Answers to requests sent on the old connection will not come.
        for (_, done) in self.requests.drain() {
            let _ = done.send(Err(RoomError::Signal("signaling connection lost; try again".into())));
        }
        for (_, done) in self.publisher.requested.drain() {
            let _ = done.send(Err(RoomError::Signal("signaling connection lost; try again".into())));
        }
        self.emit(RoomEvent::ConnectionState(ConnectionState::Reconnecting));
        let (url, token, sid) = (self.url.clone(), self.token.clone(), self.local_sid.clone());
        let (timeout, roots) = (self.options.join_timeout, self.options.extra_root_certificates.clone());
        self.resuming = Some(tokio::spawn(resume(url, token, sid, timeout, roots)));
    }

    async fn on_resumed(&mut self, resumed: Result<(SignalConn, proto::signal_response::Message), RoomError>) {
        self.resuming = None;
        match resumed {
            Ok((signal, first)) => {
                tracing::info!("signaling resumed");
                self.signal = Some(signal);
                self.keepalive.last_heard = Instant::now();
                // A new ICE session on the publisher, as LiveKit's SDKs do after a resume.
                self.publisher.pending = None;
                self.publisher.ice_restart = true;
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

    /// Writes an encoded packet on the publisher's reliable channel.
    fn write_reliable(&mut self, bytes: &[u8]) -> Result<(), RoomError> {
        let mut channel = self
            .publisher
            .reliable
            .and_then(|id| self.publ.rtc.channel(id))
            .ok_or(RoomError::Rtc("data channel not open".into()))?;
        match channel.write(true, bytes)? {
            true => Ok(()),
            false => Err(RoomError::Rtc("data channel buffer full".into())),
        }
    }

    /// Handles a packet received on a data channel: user data goes out as
    /// an event, stream parts to the reassembler (a whole stream goes out).
    pub(crate) fn on_data(&mut self, bytes: &[u8], reliable: bool) {
        match crate::room::data::decode(bytes, reliable) {
            Some(crate::room::data::Received::User(message)) => self.emit(RoomEvent::Data(message)),
            Some(crate::room::data::Received::Stream(sender, part)) => {
                if let Some(stream) = self.streams.push(&sender, part, Instant::now()) {
                    self.emit(RoomEvent::TextStream(stream));
                }
            }
            None => {}
        }
    }

    /// Sends a user data packet on the publisher's channel.
    fn send_data(&mut self, data: &OutgoingData) -> Result<(), RoomError> {
        let id = if data.reliable { self.publisher.reliable } else { self.publisher.lossy };
        let mut channel =
            id.and_then(|id| self.publ.rtc.channel(id)).ok_or(RoomError::Rtc("data channel not open".into()))?;
        self.publisher.data_sequence = self.publisher.data_sequence.wrapping_add(1);
        let bytes = crate::room::data::encode(data, self.publisher.data_sequence);
        match channel.write(true, &bytes)? {
            true => Ok(()),
            false => Err(RoomError::Rtc("data channel buffer full".into())),
        }
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
        self.publisher.requested.insert(cid, done);
        self.send(signal_request::Message::AddTrack(request)).await;
    }
}

/// Reopens signaling with `reconnect=1`, with backoff; returns the socket and its first message.
async fn resume(
    url: String,
    token: String,
    participant_sid: String,
    timeout: Duration,
    extra_roots: Vec<Vec<u8>>,
) -> Result<(SignalConn, proto::signal_response::Message), RoomError> {
    let mode = JoinMode::Resume { participant_sid };
    let mut last = RoomError::Signal("no resume attempt made".into());
    for wait in RESUME_BACKOFF {
        tokio::time::sleep(wait).await;
        let mut conn = match SignalConn::open(&url, &token, &mode, timeout, &extra_roots).await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!(error = %e, "resume attempt failed");
                last = e;
                continue;
            }
        };
        match tokio::time::timeout(timeout, conn.recv()).await {
            Ok(Ok(Some(proto::signal_response::Message::Leave(leave)))) => {
                return Err(RoomError::JoinRefused(DisconnectReason::from_server(leave.reason)));
            }
            Ok(Ok(Some(first))) => return Ok((conn, first)),
            Ok(Ok(None)) => last = RoomError::Signal("closed during resume".into()),
            Ok(Err(e)) => last = e,
            Err(_) => last = RoomError::Timeout { step: "the resume response", after: timeout },
        }
    }
    Err(last)
}

/// The next signaling message, or never while there is no connection.
async fn recv_signal(signal: &mut Option<SignalConn>) -> Result<Option<proto::signal_response::Message>, RoomError> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// The outcome of a running resume, or never while none runs.
async fn join_resume(
    resuming: &mut Option<JoinHandle<Result<(SignalConn, proto::signal_response::Message), RoomError>>>,
) -> Result<(SignalConn, proto::signal_response::Message), RoomError> {
    match resuming {
        Some(handle) => handle.await.unwrap_or_else(|e| Err(RoomError::Signal(format!("resume task: {e}")))),
        None => std::future::pending().await,
    }
}

pub(crate) fn unix_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A random number for client track ids (std's hasher keys are randomly seeded).
pub(crate) fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u32
}

/// Buffers for receiving datagrams, one per socket.
pub(crate) fn datagram_buffer() -> Vec<u8> {
    vec![0; MAX_DATAGRAM]
}
