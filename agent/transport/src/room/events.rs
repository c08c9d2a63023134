//! What the room tells its owner: participants, tracks, data, connection
//! state and why it ended.
//!
//! Plain types with no LiveKit protobuf in them, so the session code can
//! match on them without knowing the wire format. The mapping from the
//! server's `DisconnectReason` lives here too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use livekit_protocol as proto;
use tokio::sync::mpsc;

use crate::room::audio::AudioStream;
use crate::room::streams::TextStream;

/// Something that happened in the room, in the order it happened.
#[derive(Debug)]
pub enum RoomEvent {
    /// A remote participant is in the room (joined, or already there when we joined).
    ParticipantJoined(RemoteParticipant),
    /// A remote participant's media connection is up (LiveKit's `ACTIVE`
    /// state): from now on they hear and can be heard. Follows their
    /// `ParticipantJoined` (at once when they were active already).
    ParticipantActive { identity: String, sid: String },
    /// A remote participant's name, metadata or attributes changed.
    ParticipantUpdated(RemoteParticipant),
    /// A remote participant left.
    ParticipantLeft { identity: String, sid: String },
    /// A remote participant published a track.
    TrackPublished { participant: String, track: TrackDescription },
    /// A remote participant unpublished a track.
    TrackUnpublished { participant: String, track_sid: String },
    /// A remote audio track's media reaches us; decoded PCM arrives on `stream`.
    AudioTrackSubscribed { participant: String, track_sid: String, stream: AudioStream },
    /// A user data packet from another participant (or the server API).
    Data(DataMessage),
    /// A whole text stream (LiveKit data streams) from another participant.
    TextStream(TextStream),
    /// An RPC request we sent ([`Room::send_rpc_request`]) reached `from`:
    /// its acknowledgement or its response arrived. LiveKit's client SDKs
    /// acknowledge every request on receipt, handler or not, so this is a
    /// receipt for what we sent before it on the reliable channel.
    ///
    /// [`Room::send_rpc_request`]: crate::room::Room::send_rpc_request
    RpcReceipt { from: String, request_id: String },
    /// The connection's state changed (reconnecting and back).
    ConnectionState(ConnectionState),
    /// The room connection ended; no more events follow.
    Disconnected { reason: DisconnectReason },
}

impl RoomEvent {
    /// Whether this event ends the stream.
    pub fn is_final(&self) -> bool {
        matches!(self, RoomEvent::Disconnected { .. })
    }
}

/// A participant other than us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteParticipant {
    pub sid: String,
    pub identity: String,
    pub name: String,
    pub metadata: String,
    pub attributes: HashMap<String, String>,
    /// `true` for agent participants (LiveKit's participant kind AGENT).
    pub is_agent: bool,
}

impl From<&proto::ParticipantInfo> for RemoteParticipant {
    fn from(p: &proto::ParticipantInfo) -> Self {
        RemoteParticipant {
            sid: p.sid.clone(),
            identity: p.identity.clone(),
            name: p.name.clone(),
            metadata: p.metadata.clone(),
            attributes: p.attributes.clone(),
            is_agent: p.kind == proto::participant_info::Kind::Agent as i32,
        }
    }
}

/// A published track, as the server describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackDescription {
    pub sid: String,
    pub name: String,
    pub kind: TrackKind,
    /// Microphone, camera, screen share...: LiveKit's `TrackSource` name.
    pub source: String,
    pub muted: bool,
}

/// Audio, video or data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    Audio,
    Video,
    Data,
}

impl From<&proto::TrackInfo> for TrackDescription {
    fn from(t: &proto::TrackInfo) -> Self {
        let kind = match proto::TrackType::try_from(t.r#type) {
            Ok(proto::TrackType::Video) => TrackKind::Video,
            Ok(proto::TrackType::Data) => TrackKind::Data,
            _ => TrackKind::Audio,
        };
        let source = proto::TrackSource::try_from(t.source).unwrap_or(proto::TrackSource::Unknown);
        TrackDescription {
            sid: t.sid.clone(),
            name: t.name.clone(),
            kind,
            source: source.as_str_name().to_ascii_lowercase(),
            muted: t.muted,
        }
    }
}

/// A user data packet received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataMessage {
    /// The sender's identity; empty when the server API sent it.
    pub sender: String,
    pub topic: Option<String>,
    pub payload: Vec<u8>,
    /// Whether it came over the reliable (ordered, retransmitted) channel.
    pub reliable: bool,
}

/// A user data packet to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutgoingData {
    pub payload: Vec<u8>,
    pub topic: Option<String>,
    /// Identities to deliver to; empty means everyone in the room.
    pub destinations: Vec<String>,
    /// Reliable (ordered, retransmitted) or lossy (no retransmission).
    pub reliable: bool,
}

/// Connection state changes after the room is joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// The signaling connection dropped; resuming.
    Reconnecting,
    /// Resumed: same participant, same tracks.
    Reconnected,
    /// Media stopped flowing (ICE lost on a connection that carried it):
    /// nobody hears us and we hear nobody. The room fails if it stays so
    /// for 20 s.
    MediaDown,
    /// Media flows again.
    MediaUp,
}

/// Why the room connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectReason {
    /// We left (`Room::leave`, or the `Room` was dropped).
    ClientInitiated,
    /// Removed through the server API (RoomService RemoveParticipant).
    ParticipantRemoved,
    /// The room was deleted through the server API.
    RoomDeleted,
    /// The room closed (empty, or its time was up).
    RoomClosed,
    /// Someone else joined with our identity.
    DuplicateIdentity,
    /// The server is shutting down.
    ServerShutdown,
    /// The server could not complete the join.
    JoinFailure,
    /// The signaling connection was lost and resuming failed.
    SignalLost,
    /// The media connection failed (ICE or DTLS).
    MediaFailure,
    /// Our side failed (a protocol or WebRTC error), described.
    Failed(String),
    /// Any other reason the server gave, by LiveKit's name.
    Other(String),
}

impl DisconnectReason {
    /// Maps the server's `DisconnectReason` (from a `LeaveRequest`).
    pub(crate) fn from_server(code: i32) -> Self {
        use proto::DisconnectReason as P;
        match P::try_from(code).unwrap_or(P::UnknownReason) {
            P::ClientInitiated => DisconnectReason::ClientInitiated,
            P::ParticipantRemoved => DisconnectReason::ParticipantRemoved,
            P::RoomDeleted => DisconnectReason::RoomDeleted,
            P::RoomClosed => DisconnectReason::RoomClosed,
            P::DuplicateIdentity => DisconnectReason::DuplicateIdentity,
            P::ServerShutdown => DisconnectReason::ServerShutdown,
            P::JoinFailure => DisconnectReason::JoinFailure,
            P::SignalClose => DisconnectReason::SignalLost,
            P::MediaFailure => DisconnectReason::MediaFailure,
            other => DisconnectReason::Other(other.as_str_name().to_string()),
        }
    }
}

/// Creates the two queues between the room's engine and its owner: one for
/// presence and every other room event, which never drops (its volume is
/// bounded by what the server says about the room's participants and
/// tracks), and one for user data packets, text streams and RPC receipts
/// (what other participants send), which holds `data_capacity` and
/// drops (and counts) what arrives while it is full, so a participant who
/// floods data can never crowd out a join or a leave.
pub(crate) fn queues(data_capacity: usize) -> (EventSender, RoomEvents) {
    let (presence_tx, presence_rx) = mpsc::unbounded_channel();
    let (data_tx, data_rx) = mpsc::channel(data_capacity.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    (
        EventSender { presence: presence_tx, data: data_tx, dropped: dropped.clone() },
        RoomEvents { presence: presence_rx, data: data_rx, dropped },
    )
}

/// The engine's side of the queues; sending never blocks.
#[derive(Debug)]
pub(crate) struct EventSender {
    presence: mpsc::UnboundedSender<RoomEvent>,
    data: mpsc::Sender<RoomEvent>,
    dropped: Arc<AtomicU64>,
}

impl EventSender {
    /// Queues `event`; a data packet is dropped (and counted) when the owner
    /// is behind on data, any other event is always kept.
    pub(crate) fn emit(&self, event: RoomEvent) {
        match event {
            message @ (RoomEvent::Data(_) | RoomEvent::TextStream(_) | RoomEvent::RpcReceipt { .. }) => {
                if let Err(mpsc::error::TrySendError::Full(_)) = self.data.try_send(message) {
                    let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    metrics::counter!("mindbot_room_data_dropped_total").increment(1);
                    if n.is_power_of_two() {
                        tracing::debug!(dropped = n, "data packets dropped: the owner is not reading data");
                    }
                }
            }
            other => {
                // Fails only once the owner is gone, when nobody needs it.
                let _ = self.presence.send(other);
            }
        }
    }
}

/// The receiving side of the room. Presence and other room events come in
/// the order they happened, ahead of any data packet waiting; data packets
/// keep their own order. Dropping it does not leave the room; events are
/// then discarded.
#[derive(Debug)]
pub struct RoomEvents {
    presence: mpsc::UnboundedReceiver<RoomEvent>,
    data: mpsc::Receiver<RoomEvent>,
    dropped: Arc<AtomicU64>,
}

impl RoomEvents {
    /// The next event; `None` after `Disconnected` has been delivered.
    pub async fn recv(&mut self) -> Option<RoomEvent> {
        tokio::select! {
            biased;
            event = self.presence.recv() => event,
            Some(message) = self.data.recv() => Some(message),
        }
    }

    /// Data packets and text streams dropped so far because they were not read in time.
    pub fn data_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: u8) -> RoomEvent {
        RoomEvent::Data(DataMessage { sender: "u".into(), topic: None, payload: vec![n], reliable: false })
    }

    #[tokio::test]
    async fn a_data_flood_drops_data_but_never_a_join_or_a_leave() {
        let (tx, mut rx) = queues(4);
        tx.emit(RoomEvent::ParticipantJoined(RemoteParticipant {
            sid: "PA_1".into(),
            identity: "u".into(),
            name: String::new(),
            metadata: String::new(),
            attributes: HashMap::new(),
            is_agent: false,
        }));
        for n in 0..1000u16 {
            tx.emit(data(n as u8));
        }
        tx.emit(RoomEvent::ParticipantLeft { identity: "u".into(), sid: "PA_1".into() });
        assert_eq!(rx.data_dropped(), 996);
        assert!(matches!(rx.recv().await, Some(RoomEvent::ParticipantJoined(p)) if p.identity == "u"));
        assert!(matches!(rx.recv().await, Some(RoomEvent::ParticipantLeft { identity, .. }) if identity == "u"));
        for n in 0..4u8 {
            assert!(matches!(rx.recv().await, Some(RoomEvent::Data(m)) if m.payload == vec![n]));
        }
        drop(tx);
        assert!(rx.recv().await.is_none());
    }

    #[test]
    fn server_reasons_map_to_named_variants() {
        use proto::DisconnectReason as P;
        assert_eq!(DisconnectReason::from_server(P::ParticipantRemoved as i32), DisconnectReason::ParticipantRemoved);
        assert_eq!(DisconnectReason::from_server(P::RoomDeleted as i32), DisconnectReason::RoomDeleted);
        assert_eq!(DisconnectReason::from_server(P::DuplicateIdentity as i32), DisconnectReason::DuplicateIdentity);
        assert_eq!(DisconnectReason::from_server(P::ServerShutdown as i32), DisconnectReason::ServerShutdown);
        assert_eq!(
            DisconnectReason::from_server(P::UserRejected as i32),
            DisconnectReason::Other("USER_REJECTED".into())
        );
        assert_eq!(DisconnectReason::from_server(9999), DisconnectReason::Other("UNKNOWN_REASON".into()));
    }
}
