//! Signaling keepalive, as the join response sets it: a ping every
//! `interval`, and the connection counts as lost after `timeout` without
//! hearing from the server. Pure state with the time passed in.

use std::time::{Duration, Instant};

use livekit_protocol as proto;

/// Pings sent and messages heard on the signaling connection.
pub(super) struct Keepalive {
    interval: Duration,
    timeout: Duration,
    next_ping: Instant,
    last_heard: Instant,
    rtt_ms: i64,
}

impl Keepalive {
    /// Timing from the join response (0 means the defaults: 5 s and 15 s).
    pub(super) fn new(join: &proto::JoinResponse, now: Instant) -> Self {
        let secs = |s: i32, default: u64| Duration::from_secs(if s > 0 { s as u64 } else { default });
        Keepalive {
            interval: secs(join.ping_interval, 5),
            timeout: secs(join.ping_timeout, 15),
            next_ping: now,
            last_heard: now,
            rtt_ms: 0,
        }
    }

    /// The server said something (any message counts).
    pub(super) fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// Whether the server has been silent for longer than the timeout.
    pub(super) fn silent(&self, now: Instant) -> bool {
        now >= self.last_heard + self.timeout
    }

    /// The ping to send if one is due at `now` (the next is then scheduled).
    pub(super) fn ping_due(&mut self, now: Instant, unix_ms: i64) -> Option<proto::Ping> {
        if now < self.next_ping {
            return None;
        }
        self.next_ping = now + self.interval;
        Some(proto::Ping { timestamp: unix_ms, rtt: self.rtt_ms })
    }

    /// The server's pong for the ping sent at `sent_ms`.
    pub(super) fn pong(&mut self, sent_ms: i64, unix_ms: i64) {
        self.rtt_ms = (unix_ms - sent_ms).max(0);
    }

    /// When something is next due: a ping, or (with `connected`) the silence limit.
    pub(super) fn next_deadline(&self, connected: bool) -> Instant {
        if connected {
            self.next_ping.min(self.last_heard + self.timeout)
        } else {
            self.next_ping
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_follow_the_join_interval_and_silence_past_the_timeout_is_loss() {
        let join = proto::JoinResponse { ping_interval: 2, ping_timeout: 6, ..Default::default() };
        let t0 = Instant::now();
        let mut k = Keepalive::new(&join, t0);
        assert!(k.ping_due(t0, 1_000).is_some(), "the first ping goes at once");
        assert!(k.ping_due(t0 + Duration::from_secs(1), 2_000).is_none());
        k.pong(1_000, 1_040);
        let ping = k.ping_due(t0 + Duration::from_secs(2), 3_000).unwrap();
        assert_eq!((ping.timestamp, ping.rtt), (3_000, 40));
        assert_eq!(k.next_deadline(false), t0 + Duration::from_secs(4));
        assert_eq!(k.next_deadline(true), t0 + Duration::from_secs(4));
        assert!(!k.silent(t0 + Duration::from_secs(5)));
        assert!(k.silent(t0 + Duration::from_secs(6)));
        k.heard(t0 + Duration::from_secs(5));
        assert!(!k.silent(t0 + Duration::from_secs(6)));
    }

    #[test]
    fn unset_intervals_fall_back_to_five_and_fifteen_seconds() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(&proto::JoinResponse::default(), t0);
        k.ping_due(t0, 0);
        assert_eq!(k.next_deadline(false), t0 + Duration::from_secs(5));
        assert!(!k.silent(t0 + Duration::from_secs(14)) && k.silent(t0 + Duration::from_secs(15)));
    }
}
