//! The publisher connection's state: we offer, the server answers. It owns
//! our data channels, the tracks we publish from `AddTrackRequest` to media
//! flowing, the offer/answer round (one offer out at a time), and the pacing
//! of our Opus frames.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use livekit_protocol as proto;
use str0m::change::{SdpAnswer, SdpApi, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::Rtc;
use tokio::sync::{oneshot, Notify};

use crate::room::audio::{audio_level, AudioSource, Encoder, PcmQueue, FRAME_DURATION, FRAME_SAMPLES, SAMPLE_RATE};
use crate::room::data::{LOSSY_LABEL, RELIABLE_LABEL};
use crate::room::RoomError;

/// A gap after which the next frame starts a new talkspurt (RTP marker bit).
const TALKSPURT_GAP: Duration = Duration::from_millis(60);
/// How late a frame may be before pacing restarts from now instead of catching up.
const MAX_LATE: Duration = Duration::from_millis(100);

/// Who waits for a track to be published.
pub(super) type TrackReply = oneshot::Sender<Result<AudioSource, RoomError>>;

/// A track we publish, from `AddTrackRequest` to media flowing.
struct Outgoing {
    cid: String,
    mid: Option<Mid>,
    source: AudioSource,
    encoder: Encoder,
    /// Waiting for the server's answer that carries this track.
    done: Option<TrackReply>,
    /// RTP time at `rtp_origin`, in 48 kHz samples.
    rtp_start: u64,
    /// The wall time of `rtp_start`: a frame's RTP time is its slot's wall
    /// time from here, as a microphone stamps its samples when they are
    /// captured (see [`rtp_time`]).
    rtp_origin: Instant,
    /// When the next frame is due; `None` while the queue is empty.
    next_tick: Option<Instant>,
    last_sent: Option<Instant>,
}

/// Publisher-side negotiation, data channels and tracks.
#[derive(Default)]
pub(super) struct Publisher {
    pending: Option<SdpPendingOffer>,
    /// Changes arrived while an offer was out: offer again after the answer.
    again: bool,
    ice_restart: bool,
    offer_id: u32,
    reliable: Option<ChannelId>,
    lossy: Option<ChannelId>,
    data_sequence: u32,
    tracks: Vec<Outgoing>,
    /// Tracks asked for (`AddTrackRequest` sent) by cid, awaiting `TrackPublished`.
    requested: HashMap<String, TrackReply>,
}

impl Publisher {
    /// The next data packet sequence number (the server dedups by it).
    pub(super) fn next_sequence(&mut self) -> u32 {
        self.data_sequence = self.data_sequence.wrapping_add(1);
        self.data_sequence
    }

    /// Our reliable or lossy data channel, once negotiated.
    pub(super) fn channel(&self, reliable: bool) -> Option<ChannelId> {
        if reliable {
            self.reliable
        } else {
            self.lossy
        }
    }

    /// Whether data on our channel `id` came reliably (anything but the lossy one).
    pub(super) fn is_reliable(&self, id: ChannelId) -> bool {
        Some(id) != self.lossy
    }

    /// Whether both data channels are open on `rtc`.
    pub(super) fn channels_open(&self, rtc: &mut Rtc) -> bool {
        let mut open = |id: Option<ChannelId>| id.is_some_and(|id| rtc.channel(id).is_some());
        open(self.reliable) && open(self.lossy)
    }

    /// Remembers who waits for the track `cid` asked for.
    pub(super) fn track_requested(&mut self, cid: String, done: TrackReply) {
        self.requested.insert(cid, done);
    }

    /// The server accepted the track `cid`: adds it (to be offered) and
    /// returns whether there is something to offer.
    pub(super) fn track_published(
        &mut self,
        published: proto::TrackPublishedResponse,
        buffer: Duration,
        complexity: i32,
        wake: &Arc<Notify>,
        rtp_start: u32,
    ) -> bool {
        let Some(done) = self.requested.remove(&published.cid) else {
            return false;
        };
        let track_sid = published.track.map(|t| t.sid).unwrap_or_default();
        let encoder = match Encoder::new(complexity) {
            Ok(encoder) => encoder,
            Err(e) => {
                let _ = done.send(Err(e));
                return false;
            }
        };
        let queue = PcmQueue::new(buffer, wake.clone());
        self.tracks.push(Outgoing {
            cid: published.cid,
            mid: None,
            source: AudioSource { queue, track_sid },
            encoder,
            done: Some(done),
            rtp_start: u64::from(rtp_start),
            rtp_origin: Instant::now(),
            next_tick: None,
            last_sent: None,
        });
        true
    }

    /// The server unpublished our track `track_sid` (e.g. through the server API).
    pub(super) fn track_unpublished(&mut self, track_sid: &str) {
        self.tracks.retain(|t| {
            let gone = t.source.track_sid == track_sid;
            if gone {
                t.source.queue.close();
            }
            !gone
        });
    }

    /// Answers every track request still waiting with `error()`.
    pub(super) fn fail_requests(&mut self, error: impl Fn() -> RoomError) {
        for (_, done) in self.requested.drain() {
            let _ = done.send(Err(error()));
        }
    }

    /// Closes every track's queue: writers get `Closed`.
    pub(super) fn close_tracks(&self) {
        for track in &self.tracks {
            track.source.queue.close();
        }
    }

    /// After a resume: forget the offer that was out and restart ICE in the next one.
    pub(super) fn restart_ice(&mut self) {
        self.pending = None;
        self.ice_restart = true;
    }

    /// The offer for the pending changes (data channels, new tracks, ICE
    /// restart), if any; none while another offer is out (it follows the answer).
    pub(super) fn offer(&mut self, rtc: &mut Rtc) -> Option<proto::SessionDescription> {
        if self.pending.is_some() {
            self.again = true;
            return None;
        }
        let mut api = rtc.sdp_api();
        if self.reliable.is_none() {
            let (reliable, lossy) = add_data_channels(&mut api);
            self.reliable = Some(reliable);
            self.lossy = Some(lossy);
        }
        for track in self.tracks.iter_mut().filter(|t| t.mid.is_none()) {
            track.mid = Some(add_audio_send(&mut api, &track.cid));
        }
        if std::mem::take(&mut self.ice_restart) {
            api.ice_restart(true);
        }
        let (offer, pending) = api.apply()?;
        self.pending = Some(pending);
        self.offer_id += 1;
        Some(proto::SessionDescription {
            r#type: "offer".into(),
            sdp: offer.to_sdp_string(),
            id: self.offer_id,
            ..Default::default()
        })
    }

    /// The server's answer to our offer: tracks in it are published. Returns
    /// whether changes wait for another offer.
    pub(super) fn answered(&mut self, rtc: &mut Rtc, sdp: &str) -> Result<bool, RoomError> {
        let Some(pending) = self.pending.take() else {
            tracing::debug!("publisher answer with no offer out; ignored");
            return Ok(false);
        };
        let parsed = SdpAnswer::from_sdp_string(sdp)?;
        rtc.sdp_api().accept_answer(pending, parsed)?;
        for track in self.tracks.iter_mut().filter(|t| t.mid.is_some()) {
            if let Some(done) = track.done.take() {
                let _ = done.send(Ok(track.source.clone()));
            }
        }
        Ok(std::mem::take(&mut self.again))
    }

    /// Whether a negotiated track waits for PCM (the engine then listens for it).
    pub(super) fn audio_idle(&self) -> bool {
        self.tracks.iter().any(|t| t.mid.is_some() && t.next_tick.is_none())
    }

    /// When the next frame is due on any track.
    pub(super) fn next_tick(&self) -> Option<Instant> {
        self.tracks.iter().filter_map(|t| t.next_tick).min()
    }

    /// Marks tracks whose queue has filled again as due now. After silence the
    /// RTP clock has moved on by the time that passed, as a microphone's would.
    pub(super) fn wake_tracks(&mut self, now: Instant) {
        for track in self.tracks.iter_mut() {
            if track.mid.is_none() || track.next_tick.is_some() || track.source.queue.is_empty() {
                continue;
            }
            track.next_tick = Some(now);
        }
    }

    /// Encodes and writes the frames that are due on our tracks; `true` when
    /// any frame went out.
    pub(super) fn send_due_audio(&mut self, rtc: &mut Rtc, now: Instant) -> Result<bool, RoomError> {
        let mut sent = false;
        for track in self.tracks.iter_mut() {
            let (Some(mid), Some(due)) = (track.mid, track.next_tick) else { continue };
            if due > now {
                continue;
            }
            let mut frame = [0i16; FRAME_SAMPLES];
            if !track.source.queue.pop_frame(&mut frame) {
                track.next_tick = None;
                continue;
            }
            let Some(writer) = rtc.writer(mid) else {
                track.next_tick = None;
                continue;
            };
            let Some(pt) = writer.payload_params().find(|p| p.spec().codec == Codec::Opus).map(|p| p.pt()) else {
                continue;
            };
            let talkspurt = track.last_sent.is_none_or(|last| now - last > TALKSPURT_GAP);
            let level = audio_level(&frame);
            let packet = track.encoder.encode(&frame)?;
            let rtp_time = MediaTime::new(rtp_time(track.rtp_start, track.rtp_origin, due), Frequency::FORTY_EIGHT_KHZ);
            writer.audio_level(-(level as i8), level < 50).start_of_talkspurt(talkspurt).write(
                pt,
                now,
                rtp_time,
                packet.to_vec(),
            )?;
            track.last_sent = Some(now);
            sent = true;
            track.next_tick = Some(next_frame(due, now));
        }
        Ok(sent)
    }
}

/// When the frame after one due at `due` and sent at `now` is due. A frame
/// a little late is caught up (the next ones go back to back); past
/// [`MAX_LATE`] the schedule starts again from now.
fn next_frame(due: Instant, now: Instant) -> Instant {
    let next = due + FRAME_DURATION;
    if now <= next + MAX_LATE {
        next
    } else {
        now + FRAME_DURATION
    }
}

/// The RTP time (48 kHz) of a frame whose slot is `due`: its wall time since
/// `origin`, where the track's RTP time was `start`. A frame sent late keeps
/// its slot's time, and one after a stall or a silence carries the time
/// that passed, so the receiver can date each frame's audio by it (a queue
/// on the way, or a sender running behind, is late audio, not a slow clock).
fn rtp_time(start: u64, origin: Instant, due: Instant) -> u64 {
    let since = due.saturating_duration_since(origin);
    start + (since.as_micros() * u128::from(SAMPLE_RATE) / 1_000_000) as u64
}

/// Adds LiveKit's two publisher data channels: `_reliable` (ordered,
/// retransmitted) and `_lossy` (unordered, no retransmission).
fn add_data_channels(api: &mut SdpApi) -> (ChannelId, ChannelId) {
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
fn add_audio_send(api: &mut SdpApi, cid: &str) -> Mid {
    api.add_media(MediaKind::Audio, Direction::SendOnly, Some(cid.to_string()), Some(cid.to_string()), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(m: u64) -> Duration {
        Duration::from_millis(m)
    }

    #[test]
    fn a_frame_a_little_late_is_caught_up_and_one_very_late_restarts_the_schedule() {
        let t0 = Instant::now();
        assert_eq!(next_frame(t0, t0), t0 + ms(20));
        assert_eq!(next_frame(t0, t0 + ms(90)), t0 + ms(20));
        assert_eq!(next_frame(t0, t0 + ms(330)), t0 + ms(350));
    }

    #[test]
    fn rtp_time_is_the_slots_wall_time_whatever_was_sent_when() {
        let t0 = Instant::now();
        assert_eq!(rtp_time(1_000, t0, t0), 1_000);
        // Back-to-back slots are a frame apart.
        assert_eq!(rtp_time(1_000, t0, t0 + ms(20)) - rtp_time(1_000, t0, t0), FRAME_SAMPLES as u64);
        // After a stall or a silence of 2.5 s the next frame carries it.
        assert_eq!(rtp_time(0, t0, t0 + ms(2_520)), 2_520 * 48);
        // Wrapping is the RTP header's business: this is the extended time.
        assert_eq!(rtp_time(u64::from(u32::MAX), t0, t0 + ms(1)), u64::from(u32::MAX) + 48);
    }
}
