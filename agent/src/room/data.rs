//! User data packets: our `OutgoingData` to LiveKit's `DataPacket` bytes
//! and received bytes back to a `DataMessage`.
//!
//! Only user packets are surfaced; the other kinds LiveKit carries on the
//! data channels (speaker updates, RPC, streams, transcriptions) are not
//! needed by the worker and are skipped.

use livekit_protocol as proto;
use prost::Message as _;

use crate::room::{DataMessage, OutgoingData};

/// The label of the ordered, retransmitted data channel.
pub(crate) const RELIABLE_LABEL: &str = "_reliable";
/// The label of the unordered, never retransmitted data channel.
pub(crate) const LOSSY_LABEL: &str = "_lossy";

/// Encodes a user packet; `sequence` numbers packets for the server's dedup.
pub(crate) fn encode(data: &OutgoingData, sequence: u32) -> Vec<u8> {
    // The packet kind and the user packet's own destination list are deprecated:
    // the server takes the kind from the channel and routes by the packet's list.
    let user = proto::UserPacket { payload: data.payload.clone(), topic: data.topic.clone(), ..Default::default() };
    proto::DataPacket {
        destination_identities: data.destinations.clone(),
        sequence,
        value: Some(proto::data_packet::Value::User(user)),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Decodes a received packet; `None` for malformed or non-user packets.
pub(crate) fn decode(bytes: &[u8], label_reliable: bool) -> Option<DataMessage> {
    let packet = proto::DataPacket::decode(bytes).ok()?;
    let Some(proto::data_packet::Value::User(user)) = packet.value else {
        return None;
    };
    Some(DataMessage {
        sender: packet.participant_identity,
        topic: user.topic,
        payload: user.payload,
        reliable: label_reliable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_packet_round_trips_with_topic() {
        let out = OutgoingData {
            payload: b"hello".to_vec(),
            topic: Some("chat".into()),
            destinations: vec!["bob".into()],
            reliable: true,
        };
        let mut bytes = encode(&out, 3);
        // The server stamps the sender before forwarding.
        let mut packet = proto::DataPacket::decode(bytes.as_slice()).unwrap();
        assert_eq!(packet.sequence, 3);
        packet.participant_identity = "alice".into();
        bytes = packet.encode_to_vec();
        let got = decode(&bytes, true).unwrap();
        assert_eq!(got.sender, "alice");
        assert_eq!(got.topic.as_deref(), Some("chat"));
        assert_eq!(got.payload, b"hello");
    }

    #[test]
    fn non_user_packets_are_skipped() {
        let packet = proto::DataPacket {
            value: Some(proto::data_packet::Value::SipDtmf(Default::default())),
            ..Default::default()
        };
        assert!(decode(&packet.encode_to_vec(), false).is_none());
        assert!(decode(b"\xff\xff", false).is_none());
    }
}
