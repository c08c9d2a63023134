//! Capacity accounting: which jobs hold a slot, and whether another fits.
//!
//! A slot is taken the moment the worker says yes to an offer, not when the
//! assignment comes, so two offers in the same instant can never both take
//! the last slot. A yes that the server does not follow with an assignment
//! within the timeout gives its slot back. Pure bookkeeping: no clock of its
//! own (callers pass `now`), no network.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use livekit_protocol::WorkerStatus;

use super::job::AgentParticipant;

/// An accepted offer waiting for its assignment.
#[derive(Debug)]
struct Pending {
    deadline: Instant,
    participant: AgentParticipant,
}

/// What an assignment turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Assigned {
    /// It follows our yes; the participant we chose.
    Expected(AgentParticipant),
    /// We hold no slot for it: we never said yes, or our yes timed out and
    /// the slot may be gone. The caller refuses it.
    Unknown,
    /// The job is already running here.
    Duplicate,
}

/// How to answer a job offer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer {
    /// Yes, taking a slot.
    Take,
    /// Yes without a new slot: the job runs here already (re-offered after a
    /// reconnect, `resuming`). Its session goes on; the assignment that may
    /// follow is ignored ([`Assigned::Duplicate`]), so nothing opens twice.
    Keep,
    /// No, for this reason (a metric label).
    Decline(&'static str),
}

/// The worker's jobs and its limit.
#[derive(Debug)]
pub(super) struct Slots {
    max: u32,
    /// The load at which the worker is full.
    threshold: f32,
    pending: HashMap<String, Pending>,
    running: HashSet<String>,
    draining: bool,
}

impl Slots {
    pub(super) fn new(max: u32, threshold: f32) -> Slots {
        Slots { max, threshold, pending: HashMap::new(), running: HashSet::new(), draining: false }
    }

    /// Slots in use: running jobs and accepted offers.
    pub(super) fn used(&self) -> u32 {
        (self.pending.len() + self.running.len()) as u32
    }

    /// Jobs assigned and not yet ended.
    pub(super) fn running(&self) -> impl Iterator<Item = &String> {
        self.running.iter()
    }

    /// The load when the caller has no measure of its own: the share of
    /// slots in use, reaching the threshold when the last one is taken.
    pub(super) fn default_load(&self) -> f32 {
        self.used() as f32 / self.max as f32 * self.threshold
    }

    /// Whether a new job would be accepted at `load`.
    pub(super) fn available(&self, load: f32) -> bool {
        self.unavailable(load).is_none()
    }

    /// Why no new job fits at `load`, as a metric label; `None` when one does.
    pub(super) fn unavailable(&self, load: f32) -> Option<&'static str> {
        if self.draining {
            Some("draining")
        } else if self.used() >= self.max {
            Some("at_capacity")
        } else if load >= self.threshold {
            Some("loaded")
        } else {
            None
        }
    }

    /// The status to report at `load`.
    pub(super) fn status(&self, load: f32) -> WorkerStatus {
        if self.available(load) {
            WorkerStatus::WsAvailable
        } else {
            WorkerStatus::WsFull
        }
    }

    pub(super) fn drain(&mut self) {
        self.draining = true;
    }

    /// The answer to an offer of `job_id` at `load`.
    pub(super) fn answer(&self, job_id: &str, load: f32) -> Answer {
        if self.running.contains(job_id) {
            Answer::Keep
        } else if self.pending.contains_key(job_id) {
            Answer::Decline("duplicate")
        } else {
            self.unavailable(load).map_or(Answer::Take, Answer::Decline)
        }
    }

    /// Takes a slot for an offer we are about to accept, held until `now + hold`.
    pub(super) fn reserve(&mut self, job_id: &str, participant: AgentParticipant, now: Instant, hold: Duration) {
        self.pending.insert(job_id.to_string(), Pending { deadline: now + hold, participant });
    }

    /// Moves an assigned job from pending to running.
    pub(super) fn assign(&mut self, job_id: &str) -> Assigned {
        if self.running.contains(job_id) {
            return Assigned::Duplicate;
        }
        match self.pending.remove(job_id) {
            Some(pending) => {
                self.running.insert(job_id.to_string());
                Assigned::Expected(pending.participant)
            }
            None => Assigned::Unknown,
        }
    }

    /// Frees the slot of a job that ended; false if the job was not here.
    pub(super) fn finish(&mut self, job_id: &str) -> bool {
        self.running.remove(job_id) || self.pending.remove(job_id).is_some()
    }

    /// The earliest moment a pending offer times out.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// Gives back the slots of offers whose assignment did not come by `now`; their job ids.
    pub(super) fn expire(&mut self, now: Instant) -> Vec<String> {
        let late: Vec<String> =
            self.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(id, _)| id.clone()).collect();
        for id in &late {
            self.pending.remove(id);
        }
        late
    }

    /// Forgets every pending offer: the connection that made them is gone,
    /// and the server gives the jobs to another worker.
    pub(super) fn drop_pending(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> AgentParticipant {
        AgentParticipant { identity: "agent-x".into(), ..Default::default() }
    }

    #[test]
    fn two_offers_at_once_cannot_share_the_last_slot() {
        let now = Instant::now();
        let mut slots = Slots::new(1, 0.7);
        assert!(slots.available(slots.default_load()));
        slots.reserve("a", who(), now, Duration::from_secs(7));
        assert!(!slots.available(slots.default_load()), "the yes holds the slot before any assignment");
        assert_eq!(slots.status(slots.default_load()), WorkerStatus::WsFull);
        assert_eq!(slots.assign("a"), Assigned::Expected(who()));
        assert_eq!(slots.assign("b"), Assigned::Unknown);
        assert!(slots.finish("a"));
        assert!(slots.available(slots.default_load()));
    }

    #[test]
    fn an_offer_without_assignment_gives_its_slot_back() {
        let now = Instant::now();
        let mut slots = Slots::new(2, 0.7);
        slots.reserve("a", who(), now, Duration::from_secs(7));
        slots.reserve("b", who(), now, Duration::from_secs(9));
        assert_eq!(slots.next_deadline(), Some(now + Duration::from_secs(7)));
        assert!(slots.expire(now + Duration::from_secs(1)).is_empty());
        assert_eq!(slots.expire(now + Duration::from_secs(8)), vec!["a".to_string()]);
        assert_eq!(slots.used(), 1);
        assert_eq!(slots.assign("a"), Assigned::Unknown, "a late assignment holds no slot");
        assert_eq!(slots.assign("b"), Assigned::Expected(who()));
        assert_eq!(slots.assign("b"), Assigned::Duplicate);
    }

    #[test]
    fn a_job_offered_again_while_it_runs_here_is_kept_without_a_second_slot() {
        let mut slots = Slots::new(1, 0.7);
        assert_eq!(slots.answer("a", slots.default_load()), Answer::Take);
        slots.reserve("a", who(), Instant::now(), Duration::from_secs(7));
        assert_eq!(slots.answer("a", 0.0), Answer::Decline("duplicate"));
        assert_eq!(slots.assign("a"), Assigned::Expected(who()));
        // Full and even draining: the running job is still ours to keep.
        slots.drain();
        assert_eq!(slots.answer("a", slots.default_load()), Answer::Keep);
        assert_eq!(slots.answer("b", slots.default_load()), Answer::Decline("draining"));
        assert_eq!(slots.assign("a"), Assigned::Duplicate, "a second assignment opens nothing");
        assert_eq!(slots.used(), 1);
    }

    #[test]
    fn draining_or_loaded_workers_take_nothing() {
        let mut slots = Slots::new(4, 0.7);
        assert!(!slots.available(0.7));
        assert!(slots.available(0.69));
        for job in ["a", "b", "c"] {
            slots.reserve(job, who(), Instant::now(), Duration::from_secs(7));
        }
        assert!(slots.default_load() < 0.7 && slots.available(slots.default_load()));
        slots.reserve("d", who(), Instant::now(), Duration::from_secs(7));
        assert!((slots.default_load() - 0.7).abs() < 1e-6);
        slots.drain();
        assert_eq!(slots.status(0.0), WorkerStatus::WsFull);
    }
}
