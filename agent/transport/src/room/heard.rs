//! When audio last arrived from each remote participant, and when ours
//! last went out.
//!
//! The SFU forwards a publisher's packets the moment they arrive and stops
//! the moment they stop, so a remote participant's last packet is the
//! freshest sign that they are still there. The server's own word that a
//! participant left can come later: in a multi-node deployment it is
//! relayed between nodes (through Redis), and while that relay is down it
//! waits. A caller that charges for presence uses this to tell the two
//! apart.
//!
//! A participant whose audio tracks are all muted has no last packet: the
//! server stops forwarding a muted track, and silence there says nothing.
//!
//! Our own last frame out tells a caller whether anything was being said
//! to a participant while they were silent: the one thing a client that
//! stops sending could want to hear for free.
//!
//! A packet can also arrive late: a loaded server node queues what it
//! forwards, and the last packet of a user who has gone can reach us a
//! second or more after it was captured. What counts is when the audio was
//! captured, so each packet's RTP media time is mapped onto our clock: the
//! smallest (arrival - media time) seen on the stream is its transit when
//! nothing queued, and a packet's capture is its media time plus that
//! (allowed to rise [`DRIFT_PER_SECOND`] for a sender whose sample clock
//! runs slow). The estimate is never later than the arrival, never more
//! than [`MAX_CORRECTION`] earlier, and a stream whose media time jumps
//! back past [`RESYNC`] starts a new mapping: a sender's timestamps can
//! move a user's last sign back by at most that cap, never forward.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::media::Mid;

/// The most a packet's capture is put before its arrival.
pub const MAX_CORRECTION: Duration = Duration::from_secs(3);

/// A packet put more than this before its arrival means the stream's media
/// time jumped back (a new source on the same section, a sender's reset):
/// its mapping starts again from that packet.
pub const RESYNC: Duration = Duration::from_secs(5);

/// How fast a stream's least transit may rise, in microseconds per second
/// of arrivals (500 ppm: sample clocks are off by far less than that).
pub const DRIFT_PER_SECOND: i64 = 500;

/// Shared between the room's engine (which writes it per packet) and the
/// owner of the `Room` (which reads it). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct AudioHeard(Arc<Mutex<Inner>>);

#[derive(Debug, Default)]
struct Inner {
    remote: HashMap<String, Heard>,
    /// When our last audio frame went out (any of our tracks).
    sent: Option<Instant>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Heard {
    /// When the last packet's audio was captured (estimated on our clock).
    last: Option<Instant>,
    /// When that packet arrived.
    arrived: Option<Instant>,
    muted: bool,
    clock: Option<MediaClock>,
}

/// One stream's mapping from RTP media time onto our clock.
#[derive(Debug, Clone, Copy)]
struct MediaClock {
    mid: Mid,
    /// Our clock's origin for this mapping (the first packet's arrival).
    origin: Instant,
    /// The least (arrival - media time) so far, in microseconds from
    /// `origin`, risen by the allowed drift since.
    transit_us: i64,
    /// The last packet's arrival, in microseconds from `origin`.
    last_arrival_us: i64,
}

impl MediaClock {
    fn start(mid: Mid, media_us: i64, at: Instant) -> MediaClock {
        MediaClock { mid, origin: at, transit_us: -media_us, last_arrival_us: 0 }
    }

    /// When the packet of `media_us` that arrived `at` was captured; `None`
    /// when the mapping no longer holds (start another).
    fn captured(&mut self, media_us: i64, at: Instant) -> Option<Instant> {
        let arrival_us = at.saturating_duration_since(self.origin).as_micros() as i64;
        let since_us = (arrival_us - self.last_arrival_us).max(0);
        self.last_arrival_us = self.last_arrival_us.max(arrival_us);
        let risen = self.transit_us + since_us * DRIFT_PER_SECOND / 1_000_000;
        let transit = (arrival_us - media_us).min(risen);
        let early_us = arrival_us - (media_us + transit);
        if early_us > RESYNC.as_micros() as i64 {
            return None;
        }
        self.transit_us = transit;
        let early = Duration::from_micros(early_us.max(0) as u64).min(MAX_CORRECTION);
        Some(at.checked_sub(early).unwrap_or(at))
    }
}

impl AudioHeard {
    /// When the audio of the last packet from `identity` was captured (on
    /// our clock; see the module's notes), if any arrived since they last
    /// unmuted (and they are not muted now).
    pub fn last(&self, identity: &str) -> Option<Instant> {
        self.lock().remote.get(identity).and_then(|h| h.last)
    }

    /// When the last packet from `identity` arrived (what [`last`](AudioHeard::last)
    /// dates back to its capture), under the same conditions.
    pub fn last_arrival(&self, identity: &str) -> Option<Instant> {
        self.lock().remote.get(identity).and_then(|h| h.arrived)
    }

    /// How long the last packet from `identity` took past its stream's least
    /// transit (what [`last`](AudioHeard::last) put it back by).
    pub fn last_delay(&self, identity: &str) -> Option<Duration> {
        let inner = self.lock();
        let h = inner.remote.get(identity)?;
        Some(h.arrived?.saturating_duration_since(h.last?))
    }

    /// When our own last audio frame went out, if one ever did.
    pub fn last_sent(&self) -> Option<Instant> {
        self.lock().sent
    }

    pub(crate) fn sent(&self, at: Instant) {
        self.lock().sent = Some(at);
    }

    /// A packet from `identity` on section `mid`, of RTP media time
    /// `media` (numerator, clock rate), arrived `at`.
    pub(crate) fn packet(&self, identity: &str, mid: Mid, media: (u64, u32), at: Instant) {
        let media_us = (i128::from(media.0) * 1_000_000 / i128::from(media.1.max(1))) as i64;
        let mut inner = self.lock();
        let h = match inner.remote.get_mut(identity) {
            Some(h) => h,
            None => inner.remote.entry(identity.to_string()).or_default(),
        };
        let mut clock = match h.clock.filter(|c| c.mid == mid) {
            Some(c) => c,
            None => MediaClock::start(mid, media_us, at),
        };
        let captured = match clock.captured(media_us, at) {
            Some(t) => t,
            None => {
                clock = MediaClock::start(mid, media_us, at);
                at
            }
        };
        h.clock = Some(clock);
        if !h.muted {
            h.last = Some(captured);
            h.arrived = Some(at);
        }
    }

    /// Whether `identity` has no unmuted audio track (muted, or none
    /// published); muting forgets the last packet.
    pub(crate) fn set_muted(&self, identity: &str, muted: bool) {
        let mut inner = self.lock();
        let h = inner.remote.entry(identity.to_string()).or_default();
        if muted {
            h.last = None;
            h.arrived = None;
        }
        h.muted = muted;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 48_000;

    fn mid() -> Mid {
        Mid::from("0")
    }

    /// Media time (48 kHz samples) of `ms` into a stream.
    fn at_ms(ms: u64) -> (u64, u32) {
        (ms * 48, RATE)
    }

    fn ms(t: u64) -> Duration {
        Duration::from_millis(t)
    }

    #[test]
    fn the_last_packet_is_kept_until_a_mute_and_after_it_only_packets_since_the_unmute_count() {
        let heard = AudioHeard::default();
        let t0 = Instant::now();
        assert_eq!(heard.last("u"), None);
        heard.packet("u", mid(), at_ms(0), t0);
        heard.packet("u", mid(), at_ms(20), t0 + ms(20));
        assert_eq!(heard.last("u"), Some(t0 + ms(20)));
        heard.set_muted("u", true);
        assert_eq!(heard.last("u"), None, "a muted track's silence says nothing");
        heard.packet("u", mid(), at_ms(40), t0 + ms(40));
        assert_eq!(heard.last("u"), None, "a packet while muted does not count");
        heard.set_muted("u", false);
        assert_eq!(heard.last("u"), None);
        heard.packet("u", mid(), at_ms(60), t0 + ms(60));
        assert_eq!(heard.last("u"), Some(t0 + ms(60)));
    }

    #[test]
    fn a_packet_held_in_a_queue_counts_from_when_it_was_captured() {
        let heard = AudioHeard::default();
        let t0 = Instant::now();
        // A steady stream with 30 ms of transit, every 20 ms for 10 s.
        for i in 0..500 {
            heard.packet("u", mid(), at_ms(i * 20), t0 + ms(30 + i * 20));
        }
        assert_eq!(heard.last("u"), Some(t0 + ms(30 + 499 * 20)));
        assert_eq!(heard.last_delay("u"), Some(Duration::ZERO));
        // The server's queue grows: the last second of audio arrives in a
        // burst 1.2 s late. Each packet counts from its capture (plus the
        // stream's 30 ms), not from the burst.
        for i in 500..550 {
            heard.packet("u", mid(), at_ms(i * 20), t0 + ms(30 + 550 * 20 + 1_200));
        }
        let arrived = t0 + ms(30 + 550 * 20 + 1_200);
        let captured = t0 + ms(30 + 549 * 20);
        let last = heard.last("u").unwrap();
        assert!(last <= captured + ms(10) && last >= captured, "{:?}", last.duration_since(t0));
        assert!(heard.last_delay("u").unwrap() >= ms(1_210));
        assert!(last < arrived);
    }

    #[test]
    fn timestamps_cannot_put_the_last_sign_back_by_more_than_the_cap_nor_forward_at_all() {
        let heard = AudioHeard::default();
        let t0 = Instant::now();
        heard.packet("u", mid(), at_ms(0), t0);
        heard.packet("u", mid(), at_ms(20), t0 + ms(20));
        // A sender whose media time runs 4.5 s behind the packets' arrival.
        heard.packet("u", mid(), at_ms(40), t0 + ms(4_540));
        assert_eq!(heard.last("u"), Some(t0 + ms(4_540) - MAX_CORRECTION));
        assert_eq!(heard.last_arrival("u"), Some(t0 + ms(4_540)));
        // Media time ahead of the arrival: the sign is the arrival, no later.
        heard.packet("u", mid(), at_ms(60_000), t0 + ms(4_560));
        assert_eq!(heard.last("u"), Some(t0 + ms(4_560)));
        assert_eq!(heard.last_delay("u"), Some(Duration::ZERO));
    }

    #[test]
    fn a_jump_back_in_media_time_or_a_new_section_starts_the_mapping_again() {
        let heard = AudioHeard::default();
        let t0 = Instant::now();
        heard.packet("u", mid(), at_ms(100_000), t0);
        // The same section now carries another source, 90 s back in media time.
        heard.packet("u", mid(), at_ms(10_000), t0 + ms(20));
        assert_eq!(heard.last("u"), Some(t0 + ms(20)));
        heard.packet("u", mid(), at_ms(10_020), t0 + ms(40));
        assert_eq!(heard.last("u"), Some(t0 + ms(40)), "the new mapping holds for the next packet");
        // Another section (the user published again): its own mapping.
        heard.packet("u", Mid::from("1"), at_ms(0), t0 + ms(60));
        assert_eq!(heard.last("u"), Some(t0 + ms(60)));
    }

    #[test]
    fn a_sender_clock_slow_within_the_drift_allowed_is_not_taken_for_a_queue() {
        let heard = AudioHeard::default();
        let t0 = Instant::now();
        // 300 ppm slow: 20 ms of media every 20.006 ms, for an hour.
        for i in 0..180_000u64 {
            heard.packet("u", mid(), at_ms(i * 20), t0 + Duration::from_micros(i * 20_006));
        }
        assert!(heard.last_delay("u").unwrap() < ms(5), "{:?}", heard.last_delay("u"));
    }

    #[test]
    fn silence_between_talk_spurts_is_no_delay() {
        let heard = AudioHeard::default();
        let t0 = Instant::now();
        for i in 0..50 {
            heard.packet("u", mid(), at_ms(i * 20), t0 + ms(i * 20));
        }
        // 3 s without packets (DTX, or nothing said); media time moved on.
        heard.packet("u", mid(), at_ms(4_000), t0 + ms(4_000));
        assert_eq!(heard.last("u"), Some(t0 + ms(4_000)));
        assert_eq!(heard.last_delay("u"), Some(Duration::ZERO));
    }

    #[test]
    fn our_last_frame_out_is_kept_apart_from_what_we_heard() {
        let heard = AudioHeard::default();
        let t0 = Instant::now();
        assert_eq!(heard.last_sent(), None);
        heard.sent(t0);
        heard.sent(t0 + ms(20));
        assert_eq!(heard.last_sent(), Some(t0 + ms(20)));
        assert_eq!(heard.last("u"), None, "our own audio is nobody's presence");
        heard.set_muted("u", true);
        assert_eq!(heard.last_sent(), Some(t0 + ms(20)));
    }
}
