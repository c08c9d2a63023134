//! Whether the user's client can receive what the agent sends, before the
//! meter starts.
//!
//! LiveKit reports a user `ACTIVE` as soon as their media connection is up;
//! their data channels open a moment later (on a loaded server, seconds
//! later). A reliable packet sent to them in between is held by the server
//! for 2 s and then dropped. So a `started` sent at `ACTIVE` could reach the
//! user seconds after the meter started, or never: their own clock then
//! showed less time than they were charged, or never ran.
//!
//! Instead the session asks first: an RPC request (method
//! [`METHOD`]) to the user, sent again every [`PROBE_EVERY`] (under the
//! server's 2 s hold, so one of them is always held when the channel opens)
//! until the user's client acknowledges one. LiveKit's client SDKs
//! acknowledge every RPC request on receipt, whether or not the app handles
//! the method, so this needs nothing of the frontend. The meter starts and
//! `started` goes out at the first receipt, over a channel now known open.
//!
//! A client without RPC (SDKs from before late 2024) never acknowledges: the
//! session starts anyway after `worker.ready_wait_seconds`. Until it starts,
//! the agent neither speaks nor listens, so waiting costs nobody anything.

use std::collections::VecDeque;
use std::time::Duration;

use mindbot_transport::room::Room;
use tokio::time::Instant;
use tracing::debug;

/// The RPC method of the readiness probe. A frontend may register a
/// handler for it (the answer is ignored); it need not.
pub const METHOD: &str = "mindbot.ready";

/// How often the probe is sent again while no receipt has come.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Probe ids remembered: the last this many probes count as receipts.
const REMEMBERED: usize = 64;

/// A readiness handshake under way with one user.
#[derive(Debug)]
pub struct Handshake {
    since: Instant,
    give_up_at: Instant,
    next_probe: Instant,
    sent: VecDeque<String>,
}

/// What a due handshake asks of the session.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    /// A probe went out (or could not); wait on.
    Probed,
    /// No receipt in time: start anyway.
    GaveUp,
}

impl Handshake {
    /// A handshake begun now (the user's media just connected); its first
    /// probe is due at once.
    pub fn begin(wait: Duration) -> Self {
        let now = Instant::now();
        Handshake { since: now, give_up_at: now + wait, next_probe: now, sent: VecDeque::new() }
    }

    /// When [`on_due`](Self::on_due) should run next.
    pub fn due_at(&self) -> Instant {
        self.next_probe.min(self.give_up_at)
    }

    /// How long the handshake has run.
    pub fn waited(&self) -> Duration {
        self.since.elapsed()
    }

    /// Sends the next probe to `user`, or gives up when the wait is over.
    pub async fn on_due(&mut self, room: &Room, user: &str) -> Due {
        let now = Instant::now();
        if now >= self.give_up_at {
            return Due::GaveUp;
        }
        self.next_probe = now + PROBE_EVERY;
        // The response is never waited for; the timeout only tells the
        // callee how long its answer would matter.
        match room.send_rpc_request(user, METHOD, "", PROBE_EVERY).await {
            Ok(id) => {
                if self.sent.len() == REMEMBERED {
                    self.sent.pop_front();
                }
                self.sent.push_back(id);
            }
            Err(e) => debug!(error = %e, "readiness probe not sent; trying again"),
        }
        Due::Probed
    }

    /// Whether an RPC receipt from `from` for `request_id` answers one of
    /// this handshake's probes to `user`.
    pub fn is_receipt(&self, user: &str, from: &str, request_id: &str) -> bool {
        from == user && self.sent.iter().any(|id| id == request_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_probe_is_due_at_once_and_the_wait_bounds_the_others() {
        let mut h = Handshake::begin(Duration::from_millis(2500));
        assert_eq!(h.due_at(), h.since);
        h.next_probe = h.since + Duration::from_secs(3);
        assert_eq!(h.due_at(), h.since + Duration::from_millis(2500));
    }

    #[test]
    fn only_the_users_receipt_for_a_probe_sent_counts() {
        let mut h = Handshake::begin(Duration::from_secs(10));
        h.sent = ["a".to_string(), "b".to_string()].into();
        assert!(h.is_receipt("user", "user", "b"));
        assert!(!h.is_receipt("user", "someone-else", "b"), "another participant's receipt");
        assert!(!h.is_receipt("user", "user", "c"), "a request the handshake never sent");
    }
}
