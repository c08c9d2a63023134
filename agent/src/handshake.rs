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
//! Instead the session asks first: an RPC request (method [`METHOD`]) to
//! the user, sent again every [`PROBE_EVERY`] (under the server's 2 s hold,
//! so one of them is always held when the channel opens) until the user's
//! client acknowledges one. LiveKit's client SDKs acknowledge every RPC
//! request on receipt, whether or not the app handles the method, so this
//! needs nothing of the frontend. Two phases:
//! 1. [`Phase::Reaching`]: probes until the first receipt; the channel is
//!    open. `started` goes out then.
//! 2. [`Phase::Confirming`]: probes sent after `started`, on the same
//!    ordered, reliable channel, so the receipt of one proves `started` was
//!    delivered before it. The meter then starts, counted from when
//!    `started` was sent, but never from more than [`START_LEAD`] before
//!    that receipt: the user's clock started in between, so the meter leads
//!    it by less than a second however slow the server is. Charges are
//!    whole seconds rounded down, so a lead under a second neither charges
//!    a second the user did not see begin nor leaves them short by more
//!    than one. (Counting from the receipt instead would leave every user a
//!    return trip short, past the one second for a few in a hundred.)
//!
//! The session's other end shares that second: a leave reaches the agent a
//! moment after the user's clock stopped, so a lead near a second plus a
//! late leave can charge one second more than the user saw (2 visits in
//! 1000 under a stopped LiveKit node). Half a second was tried as the
//! bound instead, and was worse: under 300 sessions on two cores (load 7
//! to 9) the return trip itself often took over half a second. Back to
//! back on one machine (`bench load`, no fault): with half a second 2 of
//! 940 visits over and 29 short past the second (returns from stepping
//! away aside), with a whole second none over and 8 short.
//!
//! A client without RPC (SDKs from before late 2024) never acknowledges: its
//! session starts anyway after `worker.ready_wait_seconds`, with `started`
//! going out then. So does the session of a client whose data channel is
//! simply not open yet (a node under load can take longer than that): its
//! `started` then arrives whenever the channel opens, seconds later. So a
//! start after the wait is unconfirmed: the agent talks and listens, the
//! meter's clock runs from `started` going out, but nothing is written while
//! the second phase goes on (up to [`CONFIRM_WAIT`]). A receipt of a probe
//! sent after `started` moves the start to that receipt less
//! [`START_LEAD`], if later, as in the second phase above (within the
//! forgiveness of the agent's talking left to the user: see metering's
//! `Live::confirm_start`); no receipt, and the start stands. Until `started` goes out, the agent neither speaks nor
//! listens, so waiting (or withholding an acknowledgement) gives nobody
//! anything.

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

/// How long the second phase may take before the meter starts anyway: a
/// client that answered once answers again in a return trip.
pub const CONFIRM_WAIT: Duration = Duration::from_secs(5);

/// The meter counts from `started` going out, but never from more than this
/// before the user's receipt of a probe that followed it.
pub const START_LEAD: Duration = Duration::from_secs(1);

/// Probe ids remembered: the last this many probes count as receipts.
const REMEMBERED: usize = 64;

/// Where a handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Probing until the user's client answers: its data channel is open.
    Reaching,
    /// `started` went out; probing until a probe sent after it is answered.
    Confirming,
}

/// A readiness handshake under way with one user.
#[derive(Debug)]
pub struct Handshake {
    phase: Phase,
    since: Instant,
    /// When `started` went out (or, for a user who got it before, when
    /// this handshake began).
    announced_at: Instant,
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
        Handshake {
            phase: Phase::Reaching,
            since: now,
            announced_at: now,
            give_up_at: now + wait,
            next_probe: now,
            sent: VecDeque::new(),
        }
    }

    /// A handshake for a user who already got `started` (and left before
    /// the meter started): only the confirmation is left.
    pub fn confirming(wait: Duration) -> Self {
        Handshake { phase: Phase::Confirming, ..Handshake::begin(wait) }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// `started` went out: from now on only the receipt of a probe sent
    /// after it counts, and the first such probe is due at once.
    pub fn announced(&mut self) {
        let now = Instant::now();
        self.phase = Phase::Confirming;
        self.announced_at = now;
        self.sent.clear();
        self.next_probe = now;
        self.give_up_at = now + CONFIRM_WAIT;
    }

    /// When [`on_due`](Self::on_due) should run next.
    pub fn due_at(&self) -> Instant {
        self.next_probe.min(self.give_up_at)
    }

    /// Where the meter starts, confirmed now: when `started` went out, or
    /// [`START_LEAD`] ago if that was longer ago.
    pub fn meter_from(&self) -> Instant {
        self.announced_at.max(Instant::now() - START_LEAD)
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
    fn after_started_only_probes_sent_after_it_count() {
        let mut h = Handshake::begin(Duration::from_secs(10));
        h.sent = ["before".to_string()].into();
        h.announced();
        assert_eq!(h.phase(), Phase::Confirming);
        assert!(!h.is_receipt("user", "user", "before"), "a probe sent before `started` proves nothing of it");
        assert_eq!(h.due_at(), h.next_probe, "the next probe is due at once");
        assert!(h.give_up_at <= Instant::now() + CONFIRM_WAIT);
    }

    #[test]
    fn the_meter_counts_from_started_but_at_most_a_second_before_the_receipt() {
        let mut h = Handshake::begin(Duration::from_secs(10));
        h.announced();
        let quick = h.meter_from();
        assert_eq!(quick, h.announced_at, "a quick receipt: from `started`");
        h.announced_at = Instant::now() - Duration::from_secs(3);
        let slow = h.meter_from();
        assert!(slow > h.announced_at && slow >= Instant::now() - START_LEAD - Duration::from_millis(50));
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
