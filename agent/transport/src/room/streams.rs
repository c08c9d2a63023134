//! LiveKit's data streams (text): a stream is a `Header` packet, any number
//! of `Chunk` packets and a `Trailer`, all carried as `DataPacket` values on
//! the reliable channel and tied together by the header's stream id.
//!
//! Sending: [`TextStreamWriter`] (opened with `Room::stream_text`) sends the
//! header at once, each `write` as chunks cut under [`CHUNK_BYTES`] at UTF-8
//! boundaries, and the trailer on `close`; `Room::send_text` does all three
//! for a text known in advance (with its `total_length`).
//!
//! Receiving: [`Reassembler`] joins chunks by stream id and surfaces a whole
//! [`TextStream`] when its trailer (or inline content) arrives. It holds at
//! most `max_open` unfinished streams and `max_bytes` of text per stream, so
//! a participant cannot make the worker hold unbounded memory: what breaks
//! a bound is dropped with a log and the room goes on. Byte streams and
//! compressed streams (sent only to clients that advertise the capability,
//! which we do not) are ignored.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use livekit_protocol::data_stream as ds;
use livekit_protocol::{self as proto};
use tokio::sync::{mpsc, oneshot};

use crate::room::engine::Command;
use crate::room::RoomError;

/// Most content bytes in one chunk: LiveKit's SDKs cut at 15,000 bytes,
/// well under the data channel's message size limit.
pub const CHUNK_BYTES: usize = 15_000;
/// How long an unfinished stream is kept once another stream needs its place.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// How an outgoing text stream is labelled and addressed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextStreamOptions {
    pub topic: String,
    /// Header attributes (e.g. `lk.segment_id`).
    pub attributes: HashMap<String, String>,
    /// Identities to deliver to; empty means everyone in the room.
    pub destinations: Vec<String>,
    /// LiveKit's `generated` flag: the text was made by an agent from a
    /// participant's audio (a transcription of their speech).
    pub generated: bool,
    /// Who the stream is from, when not us: the agent sends a user's
    /// transcription as theirs (LiveKit's agents do; the server lets agents).
    pub sender_identity: Option<String>,
}

/// A whole text stream received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextStream {
    pub stream_id: String,
    /// The sender's identity (as the server stamped it).
    pub sender: String,
    pub topic: String,
    /// Header attributes, updated by the trailer's.
    pub attributes: HashMap<String, String>,
    pub text: String,
    /// When the sender opened it (Unix milliseconds, the sender's clock).
    pub timestamp_ms: i64,
    /// The trailer's reason (empty for a normal end).
    pub reason: String,
}

/// A text stream being sent. Dropping it without `close` leaves the
/// receivers with an unfinished stream, as a sender that vanished would.
#[derive(Debug)]
pub struct TextStreamWriter {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) stream_id: String,
    pub(crate) destinations: Vec<String>,
    pub(crate) sender_identity: String,
    pub(crate) next_chunk: u64,
}

impl TextStreamWriter {
    /// The stream's id (the header's `stream_id`).
    pub fn id(&self) -> &str {
        &self.stream_id
    }

    /// Chunks sent so far.
    pub fn chunks_sent(&self) -> u64 {
        self.next_chunk
    }

    /// Sends `text` as one chunk or more; nothing is sent for an empty text.
    pub async fn write(&mut self, text: &str) -> Result<(), RoomError> {
        for piece in split_utf8(text, CHUNK_BYTES) {
            let chunk = ds::Chunk {
                stream_id: self.stream_id.clone(),
                chunk_index: self.next_chunk,
                content: piece.as_bytes().to_vec(),
                ..Default::default()
            };
            self.next_chunk += 1;
            self.send(proto::data_packet::Value::StreamChunk(chunk)).await?;
        }
        Ok(())
    }

    /// Ends the stream; `attributes` go on the trailer (receivers merge them into the header's).
    pub async fn close(self, attributes: HashMap<String, String>) -> Result<(), RoomError> {
        let trailer = ds::Trailer { stream_id: self.stream_id.clone(), reason: String::new(), attributes };
        self.send(proto::data_packet::Value::StreamTrailer(trailer)).await
    }

    async fn send(&self, value: proto::data_packet::Value) -> Result<(), RoomError> {
        send_packet(&self.commands, value, self.destinations.clone(), self.sender_identity.clone()).await
    }
}

/// The header that opens a text stream.
pub(crate) fn header(options: &TextStreamOptions, stream_id: &str, total_length: Option<u64>) -> ds::Header {
    let text = ds::TextHeader {
        operation_type: ds::OperationType::Create as i32,
        generated: options.generated,
        ..Default::default()
    };
    ds::Header {
        stream_id: stream_id.to_string(),
        timestamp: crate::room::engine::unix_millis(),
        topic: options.topic.clone(),
        mime_type: "text/plain".into(),
        total_length,
        attributes: options.attributes.clone(),
        content_header: Some(ds::header::ContentHeader::TextHeader(text)),
        ..Default::default()
    }
}

/// A fresh stream id (a random UUID, as LiveKit's SDKs use).
pub(crate) fn new_stream_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Hands one stream packet to the engine and waits for it to be queued on the channel.
pub(crate) async fn send_packet(
    commands: &mpsc::Sender<Command>,
    value: proto::data_packet::Value,
    destinations: Vec<String>,
    sender_identity: String,
) -> Result<(), RoomError> {
    let (done, answer) = oneshot::channel();
    let command = Command::SendPacket { value, destinations, sender_identity, done };
    commands.send(command).await.map_err(|_| RoomError::Closed)?;
    match tokio::time::timeout(crate::room::handle::REQUEST_TIMEOUT, answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(RoomError::Closed),
        Err(_) => {
            Err(RoomError::Timeout { step: "sending a stream packet", after: crate::room::handle::REQUEST_TIMEOUT })
        }
    }
}

/// Cuts `text` into pieces of at most `max` bytes, never inside a character.
pub(crate) fn split_utf8(text: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(max.max(4));
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

/// A stream part received, as `data::decode` reads it.
#[derive(Debug)]
pub(crate) enum Part {
    Header(ds::Header),
    Chunk(ds::Chunk),
    Trailer(ds::Trailer),
}

/// Limits on what a room's incoming streams may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Unfinished text streams held at once (per room connection).
    pub max_open: usize,
    /// Text bytes one stream may carry.
    pub max_bytes: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits { max_open: 16, max_bytes: 64 * 1024 }
    }
}

struct Partial {
    sender: String,
    header: ds::Header,
    text: Vec<u8>,
    next_chunk: u64,
    opened: Instant,
}

/// Joins incoming stream packets into whole text streams, within limits.
pub(crate) struct Reassembler {
    limits: StreamLimits,
    open: HashMap<String, Partial>,
}

impl Reassembler {
    pub(crate) fn new(limits: StreamLimits) -> Self {
        Reassembler { limits, open: HashMap::new() }
    }

    /// Takes one part from `sender`; returns the stream it completes, if any.
    pub(crate) fn push(&mut self, sender: &str, part: Part, now: Instant) -> Option<TextStream> {
        match part {
            Part::Header(header) => self.open(sender, header, now),
            Part::Chunk(chunk) => {
                let partial = self.open.get_mut(&chunk.stream_id)?;
                if partial.sender != sender {
                    return None; // not the opener's: ignore rather than let anyone append
                }
                if chunk.chunk_index != partial.next_chunk {
                    tracing::info!(stream = %chunk.stream_id, sender, got = chunk.chunk_index,
                        expected = partial.next_chunk, "text stream chunk out of order; stream dropped");
                    self.open.remove(&chunk.stream_id);
                    return None;
                }
                if partial.text.len() + chunk.content.len() > self.limits.max_bytes {
                    tracing::info!(stream = %chunk.stream_id, sender, max_bytes = self.limits.max_bytes,
                        "text stream over the size limit; dropped");
                    metrics::counter!("mindbot_room_streams_dropped_total", "why" => "size").increment(1);
                    self.open.remove(&chunk.stream_id);
                    return None;
                }
                partial.next_chunk += 1;
                partial.text.extend_from_slice(&chunk.content);
                None
            }
            Part::Trailer(trailer) => {
                if self.open.get(&trailer.stream_id).is_none_or(|p| p.sender != sender) {
                    return None;
                }
                let partial = self.open.remove(&trailer.stream_id)?;
                finish(partial, trailer.attributes, trailer.reason)
            }
        }
    }

    fn open(&mut self, sender: &str, header: ds::Header, now: Instant) -> Option<TextStream> {
        let is_text = matches!(header.content_header, Some(ds::header::ContentHeader::TextHeader(_)));
        if !is_text || header.stream_id.is_empty() {
            return None; // byte streams are not for us
        }
        if header.compression != ds::CompressionType::None as i32 {
            tracing::info!(stream = %header.stream_id, sender, "compressed text stream; not supported, dropped");
            return None;
        }
        if header.total_length.is_some_and(|n| n > self.limits.max_bytes as u64) {
            tracing::info!(stream = %header.stream_id, sender, total_length = header.total_length,
                max_bytes = self.limits.max_bytes, "text stream announced over the size limit; dropped");
            metrics::counter!("mindbot_room_streams_dropped_total", "why" => "size").increment(1);
            return None;
        }
        if let Some(inline) = header.inline_content.clone() {
            if inline.len() > self.limits.max_bytes {
                return None;
            }
            let partial = Partial { sender: sender.to_string(), header, text: inline, next_chunk: 0, opened: now };
            return finish(partial, HashMap::new(), String::new());
        }
        if self.open.len() >= self.limits.max_open {
            self.open.retain(|_, p| now.duration_since(p.opened) < STALE_AFTER);
        }
        if self.open.len() >= self.limits.max_open {
            tracing::info!(stream = %header.stream_id, sender, max_open = self.limits.max_open,
                "too many unfinished text streams; new one dropped");
            metrics::counter!("mindbot_room_streams_dropped_total", "why" => "count").increment(1);
            return None;
        }
        let partial = Partial { sender: sender.to_string(), header, text: Vec::new(), next_chunk: 0, opened: now };
        self.open.insert(partial.header.stream_id.clone(), partial);
        None
    }
}

fn finish(partial: Partial, trailer_attributes: HashMap<String, String>, reason: String) -> Option<TextStream> {
    let Partial { sender, header, text, .. } = partial;
    let text = match String::from_utf8(text) {
        Ok(t) => t,
        Err(_) => {
            tracing::info!(stream = %header.stream_id, %sender, "text stream is not UTF-8; dropped");
            return None;
        }
    };
    let mut attributes = header.attributes;
    attributes.extend(trailer_attributes);
    Some(TextStream {
        stream_id: header.stream_id,
        sender,
        topic: header.topic,
        attributes,
        text,
        timestamp_ms: header.timestamp,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_header(id: &str, total: Option<u64>) -> ds::Header {
        let options = TextStreamOptions { topic: "lk.chat".into(), ..Default::default() };
        header(&options, id, total)
    }

    fn chunk(id: &str, index: u64, text: &str) -> Part {
        Part::Chunk(ds::Chunk {
            stream_id: id.into(),
            chunk_index: index,
            content: text.as_bytes().to_vec(),
            ..Default::default()
        })
    }

    fn trailer(id: &str, attributes: &[(&str, &str)]) -> Part {
        Part::Trailer(ds::Trailer {
            stream_id: id.into(),
            reason: String::new(),
            attributes: attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        })
    }

    #[test]
    fn splitting_never_cuts_a_character_and_keeps_every_byte() {
        let text = "héllo wörld ✓ ".repeat(3000);
        let pieces = split_utf8(&text, CHUNK_BYTES);
        assert!(pieces.len() > 1);
        assert!(pieces.iter().all(|p| p.len() <= CHUNK_BYTES));
        assert_eq!(pieces.concat(), text);
        assert_eq!(split_utf8("✓✓", 4), vec!["✓", "✓"]);
        assert!(split_utf8("", 10).is_empty());
    }

    #[test]
    fn chunks_are_joined_in_order_and_the_trailer_attributes_win() {
        let mut r = Reassembler::new(StreamLimits::default());
        let now = Instant::now();
        let mut h = text_header("s1", None);
        h.attributes.insert("lk.transcription_final".into(), "false".into());
        assert!(r.push("alice", Part::Header(h), now).is_none());
        assert!(r.push("alice", chunk("s1", 0, "hel"), now).is_none());
        assert!(r.push("bob", chunk("s1", 1, "XX"), now).is_none(), "only the opener appends");
        assert!(r.push("alice", chunk("s1", 1, "lo"), now).is_none());
        let got = r.push("alice", trailer("s1", &[("lk.transcription_final", "true")]), now).unwrap();
        assert_eq!((got.sender.as_str(), got.topic.as_str(), got.text.as_str()), ("alice", "lk.chat", "hello"));
        assert_eq!(got.attributes["lk.transcription_final"], "true");
        assert!(r.open.is_empty());
    }

    #[test]
    fn oversized_and_excess_streams_are_dropped_and_others_go_on() {
        let limits = StreamLimits { max_open: 2, max_bytes: 8 };
        let mut r = Reassembler::new(limits);
        let now = Instant::now();
        assert!(r.push("u", Part::Header(text_header("big", Some(9))), now).is_none());
        assert!(r.open.is_empty(), "announced too big: never held");
        r.push("u", Part::Header(text_header("a", None)), now);
        r.push("u", chunk("a", 0, "12345"), now);
        r.push("u", chunk("a", 1, "6789"), now);
        assert!(r.open.is_empty(), "grew too big: dropped");
        r.push("u", Part::Header(text_header("b", None)), now);
        r.push("u", Part::Header(text_header("c", None)), now);
        r.push("u", Part::Header(text_header("d", None)), now);
        assert_eq!(r.open.len(), 2, "a third unfinished stream is refused");
        let later = now + STALE_AFTER;
        r.push("u", Part::Header(text_header("e", None)), later);
        assert!(r.open.contains_key("e"), "stale streams give way to new ones");
        r.push("u", chunk("e", 0, "ok"), later);
        assert_eq!(r.push("u", trailer("e", &[]), later).unwrap().text, "ok");
    }

    #[test]
    fn inline_content_is_a_whole_stream_and_byte_streams_are_ignored() {
        let mut r = Reassembler::new(StreamLimits::default());
        let mut h = text_header("i", None);
        h.inline_content = Some(b"short".to_vec());
        assert_eq!(r.push("u", Part::Header(h), Instant::now()).unwrap().text, "short");
        let mut b = text_header("b", None);
        b.content_header = Some(ds::header::ContentHeader::ByteHeader(ds::ByteHeader { name: "f".into() }));
        assert!(r.push("u", Part::Header(b), Instant::now()).is_none());
        assert!(r.open.is_empty());
    }
}
