//! The subscriber connection's state: the server offers, we answer. It
//! remembers which track each media section carries, decodes remote audio
//! per section, and knows which of the server's data channels is reliable.

use std::collections::HashMap;

use str0m::channel::ChannelId;
use str0m::media::Mid;

use crate::room::audio::Decoder;
use crate::room::data::RELIABLE_LABEL;

/// Remote media and data channels on the subscriber connection.
#[derive(Default)]
pub(super) struct Subscriber {
    /// Track sids by media section, from the server's offers.
    mid_to_track: HashMap<String, String>,
    decoders: HashMap<Mid, Decoder>,
    /// Whose track each receiving section carries (kept while the section
    /// receives, decoded or not).
    owners: HashMap<Mid, String>,
    /// The server's data channels: `true` for the reliable one.
    channels: HashMap<ChannelId, bool>,
}

impl Subscriber {
    /// Remembers the offer's section-to-track map.
    pub(super) fn offered(&mut self, mid_to_track: HashMap<String, String>) {
        self.mid_to_track.extend(mid_to_track);
    }

    /// The track sid the server named for section `mid`, if it did.
    pub(super) fn track_of(&self, mid: Mid) -> Option<&str> {
        self.mid_to_track.get(&mid.to_string()).map(String::as_str)
    }

    /// Whether section `mid` is being decoded.
    pub(super) fn is_decoding(&self, mid: Mid) -> bool {
        self.decoders.contains_key(&mid)
    }

    /// Starts decoding section `mid`, which carries `owner`'s track.
    pub(super) fn start(&mut self, mid: Mid, decoder: Decoder, owner: &str) {
        self.decoders.insert(mid, decoder);
        self.owners.insert(mid, owner.to_string());
    }

    /// Stops decoding section `mid` (it no longer receives).
    pub(super) fn stop(&mut self, mid: Mid) {
        self.decoders.remove(&mid);
        self.owners.remove(&mid);
    }

    /// The identity whose track section `mid` carries, while it receives.
    pub(super) fn owner_of(&self, mid: Mid) -> Option<&str> {
        self.owners.get(&mid).map(String::as_str).filter(|o| !o.is_empty())
    }

    /// Decodes one packet of section `mid`, sent at RTP time `rtp`,
    /// concealing a gap before it first; a decoder whose owner dropped the
    /// stream is removed.
    pub(super) fn decode(&mut self, mid: Mid, packet: &[u8], rtp: u64, contiguous: bool) {
        let Some(decoder) = self.decoders.get_mut(&mid) else { return };
        if !contiguous {
            decoder.conceal(); // the gap, with one frame
        }
        if !decoder.packet(packet, rtp) {
            self.decoders.remove(&mid);
        }
    }

    /// A server data channel opened.
    pub(super) fn channel_opened(&mut self, id: ChannelId, label: &str) {
        self.channels.insert(id, label == RELIABLE_LABEL);
    }

    /// A server data channel closed.
    pub(super) fn channel_closed(&mut self, id: ChannelId) {
        self.channels.remove(&id);
    }

    /// Whether data on channel `id` came reliably (unknown channels count as reliable).
    pub(super) fn is_reliable(&self, id: ChannelId) -> bool {
        self.channels.get(&id).copied().unwrap_or(true)
    }
}
