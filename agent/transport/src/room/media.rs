//! str0m's side of the engine: its events from both peer connections, the
//! SDP changes we make, and pacing our Opus frames out.
//!
//! The subscriber connection brings remote audio (decoded per track into an
//! `AudioStream`) and the server's data packets; the publisher connection
//! carries our data channels and audio track. Readiness (both connections
//! up, both data channels open) resolves the join.

use std::time::{Duration, Instant};

use str0m::change::SdpApi;
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::{Event, IceConnectionState};

use crate::room::audio::{audio_level, Decoder, FRAME_DURATION, FRAME_SAMPLES};
use crate::room::data::{LOSSY_LABEL, RELIABLE_LABEL};
use crate::room::engine::Engine;
use crate::room::{RoomError, RoomEvent};

/// A gap after which the next frame starts a new talkspurt (RTP marker bit).
const TALKSPURT_GAP: Duration = Duration::from_millis(60);
/// How late a frame may be before pacing restarts from now instead of catching up.
const MAX_LATE: Duration = Duration::from_millis(100);

/// Adds LiveKit's two publisher data channels: `_reliable` (ordered,
/// retransmitted) and `_lossy` (unordered, no retransmission).
pub(crate) fn add_data_channels(api: &mut SdpApi) -> (ChannelId, ChannelId) {
    let reliable = api.add_channel_with_config(ChannelConfig {
        label: RELIABLE_LABEL.into(),
        ordered: true,
        reliability: Reliability::Reliable,
        ..Default::default()
    });
    let lossy = api.add_channel_with_config(ChannelConfig {
        label: LOSSY_LABEL.into(),
        ordered: false,
        reliability: Reliability::MaxRetransmits { retransmits: 0 },
        ..Default::default()
    });
    (reliable, lossy)
}

/// Adds a send-only audio section whose msid track id is the `AddTrackRequest` cid,
/// which is how the server matches media to the request.
pub(crate) fn add_audio_send(api: &mut SdpApi, cid: &str) -> Mid {
    api.add_media(MediaKind::Audio, Direction::SendOnly, Some(cid.to_string()), Some(cid.to_string()), None)
}

impl Engine {
    /// Drains both connections: datagrams go out, events are handled.
    pub(crate) fn pump(&mut self) -> Result<(), RoomError> {
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
                self.sub_up = is_up(state);
                self.note_media_state();
            }
            Event::MediaAdded(added) => self.on_remote_audio(added.mid),
            // The server reuses inactive sections for later tracks.
            Event::MediaChanged(changed) => {
                if !changed.direction.is_receiving() {
                    self.subscriber.decoders.remove(&changed.mid);
                } else if !self.subscriber.decoders.contains_key(&changed.mid) {
                    self.on_remote_audio(changed.mid);
                }
            }
            Event::MediaData(data) => {
                if let Some(decoder) = self.subscriber.decoders.get_mut(&data.mid) {
                    if !data.contiguous {
                        decoder.decode(&[]); // conceal the gap with one frame
                    }
                    if !decoder.decode(&data.data) {
                        self.subscriber.decoders.remove(&data.mid);
                    }
                }
            }
            Event::ChannelOpen(id, label) => {
                self.subscriber.channels.insert(id, label == RELIABLE_LABEL);
            }
            Event::ChannelData(data) => {
                let reliable = self.subscriber.channels.get(&data.id).copied().unwrap_or(true);
                self.on_data(&data.data, reliable);
            }
            Event::ChannelClose(id) => {
                self.subscriber.channels.remove(&id);
            }
            _ => {}
        }
    }

    fn on_publisher_event(&mut self, event: Event) {
        match event {
            Event::IceConnectionStateChange(state) => {
                tracing::debug!(?state, "publisher ICE");
                self.pub_up = is_up(state);
                self.note_media_state();
            }
            Event::ChannelOpen(id, label) => tracing::debug!(?id, label, "publisher data channel open"),
            Event::ChannelData(data) => {
                let reliable = Some(data.id) != self.publisher.lossy;
                self.on_data(&data.data, reliable);
            }
            _ => {}
        }
    }

    /// A remote audio section appeared on the subscriber: start decoding it.
    fn on_remote_audio(&mut self, mid: Mid) {
        let Some(media) = self.sub.rtc.media(mid) else { return };
        if media.kind() != MediaKind::Audio || !media.direction().is_receiving() {
            return;
        }
        let track_sid = match self.subscriber.mid_to_track.get(&mid.to_string()) {
            Some(sid) => sid.clone(),
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
                self.subscriber.decoders.insert(mid, decoder);
                self.emit(RoomEvent::AudioTrackSubscribed { participant, track_sid, stream });
            }
            Err(e) => tracing::warn!(error = %e, "no Opus decoder for a remote track"),
        }
    }

    /// Tracks how long the media has been down, to give up after a while.
    fn note_media_state(&mut self) {
        let was_connected = self.ready.is_none();
        if self.media_up() {
            self.media_down_since = None;
        } else if was_connected && self.media_down_since.is_none() {
            self.media_down_since = Some(Instant::now());
        }
    }

    /// Resolves the join once both connections are up and the data channels open.
    fn check_ready(&mut self) {
        if self.ready.is_none() || !self.media_up() {
            return;
        }
        let open = |id: Option<ChannelId>, rtc: &mut str0m::Rtc| id.is_some_and(|id| rtc.channel(id).is_some());
        if open(self.publisher.reliable, &mut self.publ.rtc) && open(self.publisher.lossy, &mut self.publ.rtc) {
            if let Some(ready) = self.ready.take() {
                let _ = ready.send(());
            }
        }
    }

    /// Marks tracks whose queue has filled again as due now. After silence the
    /// RTP clock jumps by the time that passed, as a microphone's would.
    pub(crate) fn wake_tracks(&mut self, now: Instant) {
        for track in self.publisher.tracks.iter_mut() {
            if track.mid.is_none() || track.next_tick.is_some() || track.source.queue.is_empty() {
                continue;
            }
            if let Some(last) = track.last_sent {
                let gap = now.saturating_duration_since(last).saturating_sub(FRAME_DURATION);
                let frames = gap.as_millis() as u64 / FRAME_DURATION.as_millis() as u64;
                track.rtp_samples += frames * FRAME_SAMPLES as u64;
            }
            track.next_tick = Some(now);
        }
    }

    /// Encodes and writes the frames that are due on our tracks.
    pub(crate) fn send_due_audio(&mut self, now: Instant) -> Result<(), RoomError> {
        for track in self.publisher.tracks.iter_mut() {
            let (Some(mid), Some(due)) = (track.mid, track.next_tick) else { continue };
            if due > now {
                continue;
            }
            let mut frame = [0i16; FRAME_SAMPLES];
            if !track.source.queue.pop_frame(&mut frame) {
                track.next_tick = None;
                continue;
            }
            let Some(writer) = self.publ.rtc.writer(mid) else {
                track.next_tick = None;
                continue;
            };
            let Some(pt) = writer.payload_params().find(|p| p.spec().codec == Codec::Opus).map(|p| p.pt()) else {
                continue;
            };
            let talkspurt = track.last_sent.is_none_or(|last| now - last > TALKSPURT_GAP);
            let level = audio_level(&frame);
            let packet = track.encoder.encode(&frame)?;
            let rtp_time = MediaTime::new(track.rtp_samples, Frequency::FORTY_EIGHT_KHZ);
            writer.audio_level(-(level as i8), level < 50).start_of_talkspurt(talkspurt).write(
                pt,
                now,
                rtp_time,
                packet.to_vec(),
            )?;
            track.rtp_samples += FRAME_SAMPLES as u64;
            track.last_sent = Some(now);
            let next = due + FRAME_DURATION;
            track.next_tick = Some(if now > next + MAX_LATE { now + FRAME_DURATION } else { next });
        }
        Ok(())
    }
}

impl Engine {
    /// Both connections carry media (the subscriber only when the server uses it).
    fn media_up(&self) -> bool {
        self.pub_up && (self.sub_up || !self.subscriber_primary)
    }
}

fn is_up(state: IceConnectionState) -> bool {
    matches!(state, IceConnectionState::Connected | IceConnectionState::Completed)
}
