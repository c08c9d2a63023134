//! str0m's side of the engine: its events from both peer connections, and
//! whether the media is up.
//!
//! The subscriber connection brings remote audio (decoded per track into an
//! `AudioStream`) and the server's data packets; the publisher connection
//! carries our data channels and audio track. Readiness (both connections
//! up, both data channels open) resolves the join.

use std::time::Instant;

use str0m::media::{MediaKind, Mid};
use str0m::{Event, IceConnectionState};

use super::{Engine, MEDIA_DOWN_LIMIT};
use crate::room::audio::Decoder;
use crate::room::{ConnectionState, RoomError, RoomEvent};

/// Whether each connection is ICE-connected, and since when media is down.
pub(super) struct MediaState {
    sub_up: bool,
    pub_up: bool,
    /// Whether the server sends us media and data on the subscriber connection.
    subscriber_primary: bool,
    down_since: Option<Instant>,
}

impl MediaState {
    pub(super) fn new(subscriber_primary: bool) -> Self {
        MediaState { sub_up: false, pub_up: false, subscriber_primary, down_since: None }
    }

    /// Both connections carry media (the subscriber only when the server uses it).
    pub(super) fn is_up(&self) -> bool {
        self.pub_up && (self.sub_up || !self.subscriber_primary)
    }

    /// Records a connection's ICE state; once the room has been connected,
    /// media going down starts the clock towards giving up.
    fn set(&mut self, subscriber: bool, state: IceConnectionState, was_connected: bool, now: Instant) {
        let up = matches!(state, IceConnectionState::Connected | IceConnectionState::Completed);
        if subscriber {
            self.sub_up = up;
        } else {
            self.pub_up = up;
        }
        if self.is_up() {
            self.down_since = None;
        } else if was_connected && self.down_since.is_none() {
            self.down_since = Some(now);
        }
    }

    /// When the room counts as failed if media stays down.
    pub(super) fn give_up_at(&self) -> Option<Instant> {
        self.down_since.map(|since| since + MEDIA_DOWN_LIMIT)
    }
}

impl Engine {
    /// Drains both connections: datagrams go out, events are handled.
    pub(super) fn pump(&mut self) -> Result<(), RoomError> {
        while let Some(event) = self.sub.poll_event()? {
            self.on_subscriber_event(event);
        }
        while let Some(event) = self.publ.poll_event()? {
            self.on_publisher_event(event);
        }
        self.check_ready();
        Ok(())
    }

    fn on_subscriber_event(&mut self, event: Event) {
        match event {
            Event::IceConnectionStateChange(state) => {
                tracing::debug!(?state, "subscriber ICE");
                self.set_media(true, state);
            }
            Event::MediaAdded(added) => self.on_remote_audio(added.mid),
            // The server reuses inactive sections for later tracks.
            Event::MediaChanged(changed) => {
                if !changed.direction.is_receiving() {
                    self.subscriber.stop(changed.mid);
                } else if !self.subscriber.is_decoding(changed.mid) {
                    self.on_remote_audio(changed.mid);
                }
            }
            Event::MediaData(data) => {
                match self.subscriber.owner_of(data.mid) {
                    Some(owner) if !is_server_silence(&data.data) => {
                        self.heard.packet(owner, data.mid, (data.time.numer(), data.time.denom()), data.network_time)
                    }
                    _ => {}
                }
                self.subscriber.decode(data.mid, &data.data, data.time.numer(), data.contiguous)
            }
            Event::ChannelOpen(id, label) => self.subscriber.channel_opened(id, &label),
            Event::ChannelData(data) => {
                let reliable = self.subscriber.is_reliable(data.id);
                self.on_data(&data.data, reliable);
            }
            Event::ChannelClose(id) => self.subscriber.channel_closed(id),
            _ => {}
        }
    }

    fn on_publisher_event(&mut self, event: Event) {
        match event {
            Event::IceConnectionStateChange(state) => {
                tracing::debug!(?state, "publisher ICE");
                self.set_media(false, state);
            }
            Event::ChannelOpen(id, label) => tracing::debug!(?id, label, "publisher data channel open"),
            Event::ChannelData(data) => {
                let reliable = self.publisher.is_reliable(data.id);
                self.on_data(&data.data, reliable);
            }
            _ => {}
        }
    }

    /// Records a connection's ICE state and tells the owner when media of a
    /// joined room stops or flows again.
    fn set_media(&mut self, subscriber: bool, state: IceConnectionState) {
        let was_down = self.media.give_up_at().is_some();
        self.media.set(subscriber, state, self.ready.is_none(), Instant::now());
        match (was_down, self.media.give_up_at().is_some()) {
            (false, true) => {
                tracing::info!(?state, subscriber, "media down");
                self.emit(RoomEvent::ConnectionState(ConnectionState::MediaDown));
            }
            (true, false) => {
                tracing::info!("media up again");
                self.emit(RoomEvent::ConnectionState(ConnectionState::MediaUp));
            }
            _ => {}
        }
    }

    /// A remote audio section appeared on the subscriber: start decoding it.
    fn on_remote_audio(&mut self, mid: Mid) {
        let Some(media) = self.sub.rtc().media(mid) else { return };
        if media.kind() != MediaKind::Audio || !media.direction().is_receiving() {
            return;
        }
        let track_sid = match self.subscriber.track_of(mid) {
            Some(sid) => sid.to_string(),
            None => media.track_id().to_string(),
        };
        // LiveKit's stream id is "<participant sid>|<stream>".
        let publisher_sid = media.stream_id().split('|').next().unwrap_or_default().to_string();
        let participant = self
            .participants
            .owner_of_track(&track_sid)
            .or_else(|| self.participants.identity_of(&publisher_sid))
            .unwrap_or_default()
            .to_string();
        match Decoder::new(self.options.audio_stream_frames) {
            Ok((decoder, stream)) => {
                tracing::debug!(%mid, track_sid, participant, "subscribed to remote audio");
                self.subscriber.start(mid, decoder, &participant);
                self.emit(RoomEvent::AudioTrackSubscribed { participant, track_sid, stream });
            }
            Err(e) => tracing::warn!(error = %e, "no Opus decoder for a remote track"),
        }
    }

    /// Resolves the join once both connections are up and the data channels open.
    fn check_ready(&mut self) {
        if self.ready.is_none() || !self.media.is_up() {
            return;
        }
        if self.publisher.channels_open(self.publ.rtc()) {
            if let Some(ready) = self.ready.take() {
                let _ = ready.send(());
            }
        }
    }
}

/// The silence the server itself writes into a track for a moment after its
/// publisher muted or left (so decoders fade out rather than hold the last
/// noise): LiveKit's Opus silence frame, a CELT silence frame padded with
/// zeros to 80 bytes. It says nothing about the publisher being there.
fn is_server_silence(payload: &[u8]) -> bool {
    payload.len() >= 80 && payload[..3] == [0xf8, 0xff, 0xfe] && payload[3..80].iter().all(|b| *b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_silence_frames_are_told_from_a_publishers_audio() {
        let mut blank = vec![0xf8, 0xff, 0xfe];
        blank.resize(80, 0);
        assert!(is_server_silence(&blank));
        assert!(!is_server_silence(&[0xf8, 0xff, 0xfe]), "an encoder's own 3-byte silence frame is the publisher's");
        let mut voice = blank.clone();
        voice[40] = 0x17;
        assert!(!is_server_silence(&voice));
    }

    #[test]
    fn media_down_after_connecting_gives_up_after_the_limit_and_recovery_clears_it() {
        let t0 = Instant::now();
        let mut m = MediaState::new(true);
        m.set(false, IceConnectionState::Connected, false, t0);
        assert!(!m.is_up(), "the subscriber carries media here and is not up yet");
        m.set(true, IceConnectionState::Checking, false, t0);
        assert_eq!(m.give_up_at(), None, "down before the join completes is the join timeout's business");
        m.set(true, IceConnectionState::Connected, false, t0);
        assert!(m.is_up());
        m.set(true, IceConnectionState::Disconnected, true, t0);
        assert_eq!(m.give_up_at(), Some(t0 + MEDIA_DOWN_LIMIT));
        m.set(true, IceConnectionState::Completed, true, t0);
        assert_eq!(m.give_up_at(), None);
    }

    #[test]
    fn without_a_primary_subscriber_the_publisher_alone_is_enough() {
        let mut m = MediaState::new(false);
        m.set(false, IceConnectionState::Completed, false, Instant::now());
        assert!(m.is_up());
    }
}
