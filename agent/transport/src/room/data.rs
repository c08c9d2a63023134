//! Data packets: our `OutgoingData` and data stream parts to LiveKit's
//! `DataPacket` bytes, and received bytes back to a `DataMessage` or a
//! stream part (joined in `streams.rs`).
//!
//! User packets, data streams and RPC (requests to us, and the callee's
//! acknowledgement or response to ours) are surfaced; the other kinds
//! LiveKit carries on the data channels (speaker updates, legacy
//! transcriptions) are not needed by the worker and are skipped.

use livekit_protocol as proto;
use prost::Message as _;

use crate::room::streams::Part;
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

/// Encodes a data stream part; `sender_identity` empty means us (the
/// server stamps it), else the participant an agent sends on behalf of.
pub(crate) fn encode_value(
    value: proto::data_packet::Value,
    destinations: Vec<String>,
    sender_identity: String,
    sequence: u32,
) -> Vec<u8> {
    proto::DataPacket {
        destination_identities: destinations,
        participant_identity: sender_identity,
        sequence,
        value: Some(value),
        ..Default::default()
    }
    .encode_to_vec()
}

/// What a received packet holds, for the engine.
#[derive(Debug)]
pub(crate) enum Received {
    User(DataMessage),
    /// A data stream part and its sender's identity.
    Stream(String, Part),
    /// An RPC request to us (LiveKit RPC, version 1 on the data channel).
    RpcRequest {
        from: String,
        id: String,
        version: u32,
    },
    /// Proof that an RPC request of ours reached its callee: its
    /// acknowledgement, or its response (which a callee sends only after
    /// receiving the request).
    RpcReceipt {
        from: String,
        id: String,
    },
}

/// Decodes a received packet; `None` for malformed or other kinds of packets.
pub(crate) fn decode(bytes: &[u8], label_reliable: bool) -> Option<Received> {
    use proto::data_packet::Value;
    let packet = proto::DataPacket::decode(bytes).ok()?;
    let sender = packet.participant_identity;
    match packet.value? {
        Value::User(user) => Some(Received::User(DataMessage {
            sender,
            topic: user.topic,
            payload: user.payload,
            reliable: label_reliable,
        })),
        Value::StreamHeader(h) => Some(Received::Stream(sender, Part::Header(h))),
        Value::StreamChunk(c) => Some(Received::Stream(sender, Part::Chunk(c))),
        Value::StreamTrailer(t) => Some(Received::Stream(sender, Part::Trailer(t))),
        Value::RpcRequest(r) => Some(Received::RpcRequest { from: sender, id: r.id, version: r.version }),
        Value::RpcAck(a) => Some(Received::RpcReceipt { from: sender, id: a.request_id }),
        Value::RpcResponse(r) => Some(Received::RpcReceipt { from: sender, id: r.request_id }),
        _ => None,
    }
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
        let Some(Received::User(got)) = decode(&bytes, true) else { panic!("not a user packet") };
        assert_eq!(got.sender, "alice");
        assert_eq!(got.topic.as_deref(), Some("chat"));
        assert_eq!(got.payload, b"hello");
    }

    #[test]
    fn a_stream_header_round_trips_with_the_sender_it_is_sent_for() {
        let options = crate::room::TextStreamOptions { topic: "lk.transcription".into(), ..Default::default() };
        let header = crate::room::streams::header(&options, "s1", Some(5));
        let value = proto::data_packet::Value::StreamHeader(header);
        let bytes = encode_value(value, vec!["bob".into()], "alice".into(), 9);
        let packet = proto::DataPacket::decode(bytes.as_slice()).unwrap();
        assert_eq!((packet.sequence, packet.destination_identities.as_slice()), (9, &["bob".to_string()][..]));
        let Some(Received::Stream(sender, Part::Header(h))) = decode(&bytes, true) else { panic!("not a header") };
        assert_eq!((sender.as_str(), h.stream_id.as_str(), h.topic.as_str()), ("alice", "s1", "lk.transcription"));
        assert_eq!((h.total_length, h.mime_type.as_str()), (Some(5), "text/plain"));
    }

    #[test]
    fn rpc_requests_to_us_and_receipts_for_ours_are_read() {
        use proto::data_packet::Value;
        let stamped = |value: Value| {
            let packet =
                proto::DataPacket { participant_identity: "alice".into(), value: Some(value), ..Default::default() };
            decode(&packet.encode_to_vec(), true)
        };
        let request = proto::RpcRequest { id: "r1".into(), method: "m".into(), version: 1, ..Default::default() };
        let Some(Received::RpcRequest { from, id, version }) = stamped(Value::RpcRequest(request)) else {
            panic!("not a request")
        };
        assert_eq!((from.as_str(), id.as_str(), version), ("alice", "r1", 1));
        let ack = Value::RpcAck(proto::RpcAck { request_id: "r2".into() });
        assert!(matches!(stamped(ack), Some(Received::RpcReceipt { from, id }) if from == "alice" && id == "r2"));
        // A response (here an error) shows the request arrived as well as an ack does.
        let error = proto::rpc_response::Value::Error(proto::RpcError { code: 1400, ..Default::default() });
        let response = Value::RpcResponse(proto::RpcResponse { request_id: "r3".into(), value: Some(error) });
        assert!(matches!(stamped(response), Some(Received::RpcReceipt { id, .. }) if id == "r3"));
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
