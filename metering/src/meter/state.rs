//! The meter's bookkeeping as pure logic over explicit instants: live clocks,
//! which ticks are durable, what the next batch asks for, when money runs out
//! and which warnings are due. No I/O and no clock reads here, so every rule
//! is tested by stepping time by hand.
//!
//! Charging is in arrears: a second is charged once it has been lived, so a
//! crash or a hang-up between ticks costs the user nothing for the
//! unfinished second. The one fraction ever charged is the last remainder of
//! a balance: when the money runs out inside a second, the clock stops at the
//! exact instant the remainder is spent, and that remainder is the final tick.
//! When several sessions of a user run out together, each pays the exact
//! cost of its own last fraction (rounded to the millisecond), never another
//! session's: no session is charged more than its metered time at its rate.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::ids::{SessionId, UserId};
use crate::ledger::Funds;
use crate::money::{Millis, Rate};
use crate::store::{TickEntry, TickResult};

/// The furthest exhaustion scheduled (about 31 years): a balance lasting
/// longer is as good as endless, and an instant that far out stays valid.
const MAX_WAIT_MS: i64 = 1_000_000_000_000;

/// Audio quieter than this is not yet a sign the user is gone (a silent
/// microphone with discontinuous transmission still sends a packet every
/// 400 ms).
pub const QUIET: Duration = Duration::from_millis(500);

/// The longest a user's silence holds back the writing of their seconds
/// (see [`Presence`]). A worker that dies during a hold loses at most this
/// much of a session's charge, in the user's favour.
pub const HOLD_LIMIT: Duration = Duration::from_secs(30);

/// How long the user must have gone unheard when a session closes for the
/// quiet its end held back to be taken back without a leave (see
/// [`EndHold`]): longer than a silent microphone's gap between packets
/// (400 ms) plus the lag of a loaded agent, so a user who is there is
/// never taken for gone.
pub const END_QUIET: Duration = Duration::from_secs(2);

/// The most a session is ever forgiven in all, at leaves the user's own
/// client could have timed, of the time the agent was talking to them
/// (see [`Presence`]).
pub const FORGIVE_LIMIT: Duration = Duration::from_secs(5);

/// The most a user's sessions are forgiven together, of the agent's
/// talking, over the sessions they started in the last hour (each still at
/// most [`FORGIVE_LIMIT`]): a client that opens session after session to
/// listen without paying gains this much an hour, not [`FORGIVE_LIMIT`] a
/// session. Read when a session opens; sessions open at the same time may
/// each have what was left then.
pub const USER_FORGIVE_PER_HOUR: Duration = Duration::from_secs(15);

/// The longest a start not yet confirmed holds back the writing of its
/// seconds (see [`Live::resume_unconfirmed`]); the caller decides sooner
/// (the agent within its readiness handshake's confirmation wait, 5 s).
/// Past it the start stands as it was, and a worker that dies during the
/// hold loses at most this much of a session's charge, in the user's favour.
pub const START_HOLD_LIMIT: Duration = Duration::from_secs(10);

/// Why the user and the agent no longer hear each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// The room says the user left. A client could time that (stop
    /// sending, listen on, then go): of the quiet before it, the time up to
    /// the agent's last words is forgiven at most [`FORGIVE_LIMIT`] per
    /// session; the quiet after them, in which the agent said nothing, is
    /// forgiven whole (at most [`HOLD_LIMIT`]).
    UserLeft,
    /// The agent's own connection broke (its server or node went): nothing
    /// the user controls, so the whole quiet since the user was last heard
    /// (at most [`HOLD_LIMIT`]) is taken back.
    Interrupted,
}

/// When the user was last heard (their audio's last packet), as the room
/// knows it: `None` when there is no such sign (muted, nothing published,
/// or no room to ask).
///
/// Charging follows the room's word that the user is present, and a leave
/// can reach the agent late (relayed between a cluster's nodes). With a
/// presence, the meter holds back the seconds lived after the user's audio
/// stopped (past [`QUIET`], for at most [`HOLD_LIMIT`]), and when the leave
/// (or the break of the agent's own connection) does come the clock stops
/// where that hold began, so the late word is not charged.
/// Bounded: seconds already written stay charged, silence since the last
/// resume (no packet at all) is no sign, and of a quiet before a leave,
/// the time in which the agent was still talking (up to its last words,
/// from [`Presence::with_spoken`]) is forgiven at most [`FORGIVE_LIMIT`]
/// per session in all: a client that stops sending and listens on gains
/// at most that. The quiet after the agent's last words is forgiven whole:
/// nothing reached the user then that a client could want for free.
#[derive(Clone)]
pub struct Presence {
    heard: Arc<dyn Fn() -> Option<Instant> + Send + Sync>,
    spoken: Option<Arc<dyn Fn() -> Option<Instant> + Send + Sync>>,
    arrived: Option<Arc<dyn Fn() -> Option<Instant> + Send + Sync>>,
}

impl Presence {
    /// `last_heard`: when the user's last audio arrived. Without
    /// [`with_spoken`](Presence::with_spoken), the agent counts as talking
    /// all the time (every leave's forgiveness is capped).
    pub fn new(last_heard: impl Fn() -> Option<Instant> + Send + Sync + 'static) -> Presence {
        Presence { heard: Arc::new(last_heard), spoken: None, arrived: None }
    }

    /// `last_arrived`: when that last audio packet reached us, where
    /// `last_heard` dates it earlier (to its capture, from the sender's own
    /// timestamps, when a queue on the way held it). The sender controls
    /// those timestamps, so the time between the two that a leave gives
    /// back shares the [`FORGIVE_LIMIT`] with the agent's talking.
    pub fn with_arrival(mut self, last_arrived: impl Fn() -> Option<Instant> + Send + Sync + 'static) -> Presence {
        self.arrived = Some(Arc::new(last_arrived));
        self
    }

    /// `last_spoken`: when the agent's own last audio went out to the room
    /// (`None`: it never spoke).
    pub fn with_spoken(mut self, last_spoken: impl Fn() -> Option<Instant> + Send + Sync + 'static) -> Presence {
        self.spoken = Some(Arc::new(last_spoken));
        self
    }

    fn last_heard(&self) -> Option<Instant> {
        (self.heard)()
    }

    /// When the last packet arrived, never before `heard`.
    fn arrived(&self, heard: Instant) -> Instant {
        self.arrived.as_ref().and_then(|a| a()).map_or(heard, |a| a.max(heard))
    }

    /// Until when, at `now`, the agent may have been talking (`None`: it
    /// never spoke).
    fn spoken_until(&self, now: Instant) -> Option<Instant> {
        match &self.spoken {
            Some(spoken) => spoken().map(|t| t.min(now)),
            None => Some(now),
        }
    }
}

impl fmt::Debug for Presence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Presence")
    }
}

/// What a clock stopped for good leaves open: it stopped at `at` (the
/// balance ran out, or the end was decided) while the user's audio may have
/// stopped more than [`QUIET`] before. The meter held those seconds back for
/// a late leave, and the end would otherwise write them before that leave
/// could come (the hang-up at zero takes the session out of the room). So
/// they stay unwritten, and the final remainder with them, until decided:
/// audio after the hold began, or the hold lapsing ([`HOLD_LIMIT`] after
/// the last audio), charges them; a leave or a break of the agent's
/// connection, or the session closing with the user unheard for
/// [`END_QUIET`] or more, takes them back as at a leave at `at` (the agent's talking in them counting
/// against [`FORGIVE_LIMIT`]).
#[derive(Debug, Clone, Copy)]
pub struct EndHold {
    at: Instant,
    live_ms: i64,
    ran_from: Option<Instant>,
    /// Until when the agent may have been talking, as of `at` (its goodbye
    /// after the stop is not in the quiet).
    spoken: Option<Instant>,
}

/// A session's live clock: time the caller said the session was live.
#[derive(Debug, Clone)]
pub struct Clock {
    accrued_ms: i64,
    accrued_us: u32,
    running_since: Option<Instant>,
}

impl Clock {
    pub fn started(now: Instant) -> Clock {
        Clock { accrued_ms: 0, accrued_us: 0, running_since: Some(now) }
    }

    /// Live milliseconds at `now` (rounded down).
    pub fn live_ms(&self, now: Instant) -> i64 {
        let run = self.running_since.map_or(0, |s| now.saturating_duration_since(s).as_micros() as i64);
        self.accrued_ms + (i64::from(self.accrued_us) + run) / 1000
    }

    pub fn running(&self) -> bool {
        self.running_since.is_some()
    }

    pub fn pause(&mut self, now: Instant) {
        if let Some(s) = self.running_since.take() {
            let us = i64::from(self.accrued_us) + now.saturating_duration_since(s).as_micros() as i64;
            self.accrued_ms += us / 1000;
            self.accrued_us = (us % 1000) as u32;
        }
    }

    pub fn resume(&mut self, now: Instant) {
        if self.running_since.is_none() {
            self.running_since = Some(now);
        }
    }

    /// When it last started running, if it runs.
    pub fn running_since(&self) -> Option<Instant> {
        self.running_since
    }

    /// Takes `ms` off the live time at `now`, as if the clock had started
    /// that much later: the running stretch's start moves (never past
    /// `now`), and what is left comes off the time accrued before it.
    pub fn start_later(&mut self, ms: i64, now: Instant) {
        let mut left = ms.max(0);
        if let Some(since) = self.running_since {
            let moved = left.min(now.saturating_duration_since(since).as_millis() as i64);
            self.running_since = Some(since + Duration::from_millis(moved as u64));
            left -= moved;
        }
        if left > 0 {
            let us = (self.accrued_ms * 1000 + i64::from(self.accrued_us) - left * 1000).max(0);
            self.accrued_ms = us / 1000;
            self.accrued_us = (us % 1000) as u32;
        }
    }

    /// Stops the clock at exactly `live_ms`.
    pub fn stop_at(&mut self, live_ms: i64) {
        self.running_since = None;
        self.accrued_ms = live_ms;
        self.accrued_us = 0;
    }
}

/// Where a session stands.
#[derive(Debug, Clone)]
pub struct Live {
    pub user: UserId,
    pub rate: Rate,
    pub clock: Clock,
    /// Last tick sequence number the database has applied.
    pub durable_seq: i64,
    /// Whole seconds covered by applied ticks.
    pub durable_seconds: i64,
    /// The entry sent and not yet acknowledged: resent as is until it is,
    /// so a write whose answer was lost is applied once.
    pub unacked: Option<TickEntry>,
    /// Whether `unacked` carries the final remainder. The balance can run
    /// out while an entry of whole seconds is unacknowledged; that entry is
    /// then still whole seconds only, and the remainder follows it.
    unacked_final: bool,
    /// Set when the balance ran out: the clock is stopped and this remainder
    /// is owed as the final tick.
    pub exhausted: Option<Millis>,
    pub final_sent: bool,
    /// Warning thresholds (ms) already announced.
    pub warned: BTreeSet<i64>,
    /// The session is closing: no more seconds are added.
    pub closing: bool,
    /// Its persona is ad-supported: earned cards pay for it too.
    pub ad_supported: bool,
    /// The room's sign that the user is still there, if it gives one.
    pub presence: Option<Presence>,
    /// Audio counts as that sign only from here: when the clock last
    /// started or resumed with the user (re)joining. A resume after a break
    /// of the agent's own connection keeps it: the user did nothing then.
    pub sign_since: Instant,
    /// Live time the agent was talking, taken back at leaves the room
    /// reported after the user's audio had stopped (at most
    /// [`FORGIVE_LIMIT`] in all; the quiet after its last words, and breaks
    /// of the agent's own connection, are not counted here).
    pub forgiven_ms: i64,
    /// What this session may be forgiven in all (at most
    /// [`FORGIVE_LIMIT`], less when the user's sessions of the last hour
    /// were forgiven near [`USER_FORGIVE_PER_HOUR`]).
    pub forgive_limit_ms: i64,
    /// The quiet the clock's stop left open (the balance ran out or the end
    /// was decided while the user's audio had stopped), until decided.
    pub end_hold: Option<EndHold>,
    /// The clock's first start, not yet confirmed (see
    /// [`resume_unconfirmed`](Live::resume_unconfirmed)): nothing is written
    /// until it is, or until [`START_HOLD_LIMIT`] after it.
    pub start_hold: Option<Instant>,
}

impl Live {
    /// What a session may be forgiven when its user's sessions of the last
    /// hour were forgiven `recent_ms` together.
    pub fn forgive_limit_after(recent_ms: i64) -> i64 {
        let limit = FORGIVE_LIMIT.as_millis() as i64;
        (USER_FORGIVE_PER_HOUR.as_millis() as i64 - recent_ms.max(0)).clamp(0, limit)
    }

    pub fn new(user: UserId, rate: Rate, now: Instant) -> Live {
        Live {
            user,
            rate,
            ad_supported: false,
            clock: Clock::started(now),
            durable_seq: 0,
            durable_seconds: 0,
            unacked: None,
            unacked_final: false,
            exhausted: None,
            final_sent: false,
            warned: BTreeSet::new(),
            closing: false,
            presence: None,
            sign_since: now,
            forgiven_ms: 0,
            forgive_limit_ms: FORGIVE_LIMIT.as_millis() as i64,
            end_hold: None,
            start_hold: None,
        }
    }

    /// The clock runs again: with the user (re)joining (`rejoined`), or
    /// after a break of the agent's own connection, across which the
    /// user's last audio stays a sign.
    pub fn resume(&mut self, now: Instant, rejoined: bool) {
        if self.clock.running() {
            return;
        }
        self.clock.resume(now);
        if rejoined {
            self.sign_since = now;
        }
    }

    /// The clock runs from `since`, a start the user's client has not
    /// confirmed: it acknowledged nothing yet, so when it learned of the
    /// start is not known (a client whose data channel opened late may get
    /// the news seconds after it went out). Nothing is written until
    /// [`confirm_start`](Live::confirm_start) decides where the start was,
    /// or until [`START_HOLD_LIMIT`] passes (the start then stands, as for a
    /// client that never acknowledges). Only a first start, with nothing
    /// lived before it, is held.
    pub fn resume_unconfirmed(&mut self, since: Instant) {
        let first = !self.clock.running() && self.clock.live_ms(since) == 0 && self.committed_seconds() == 0;
        self.resume(since, true);
        if first && self.clock.running() {
            self.start_hold = Some(since);
        }
    }

    /// Decides the start held by [`resume_unconfirmed`](Live::resume_unconfirmed),
    /// at `now`: the user's client learned of it by `at` (never earlier than
    /// the held start, never later than now), or with `None` it stands. The
    /// time between comes off the clock, as if it had started then; the
    /// held seconds are written from the next batch on. A balance that ran
    /// out in the meantime owes no remainder (as at a leave). The agent was
    /// already talking then, and a client could withhold its receipt to
    /// listen for free, so what comes off counts against the forgiveness
    /// left ([`FORGIVE_LIMIT`] a session, [`USER_FORGIVE_PER_HOUR`] a user)
    /// and is bounded by it. Returns the time taken off.
    pub fn confirm_start(&mut self, now: Instant, at: Option<Instant>) -> Duration {
        let Some(from) = self.start_hold.take() else { return Duration::ZERO };
        let later_ms = at.map_or(0, |at| at.min(now).saturating_duration_since(from).as_millis() as i64);
        let budget = (self.forgive_limit_ms - self.forgiven_ms).max(0);
        let taken = later_ms.min(self.clock.live_ms(now)).min(budget);
        if taken <= 0 {
            return Duration::ZERO;
        }
        self.forgiven_ms += taken;
        self.clock.start_later(taken, now);
        // A stop in the meantime snapshotted the clock as it was.
        if let Some(hold) = &mut self.end_hold {
            hold.live_ms = (hold.live_ms - taken).max(0);
        }
        if self.exhausted.is_some() && !self.final_sent && !self.unacked_final {
            self.exhausted = Some(Millis::ZERO);
        }
        Duration::from_millis(taken as u64)
    }

    /// The user's last audio, when it is a sign worth acting on: heard
    /// since they last joined ([`sign_since`](Live::sign_since)), at most
    /// [`HOLD_LIMIT`] ago, with the clock running and the session still
    /// charged as it runs.
    fn last_heard(&self, now: Instant) -> Option<Instant> {
        if !self.draining() || self.closing || !self.clock.running() {
            return None;
        }
        let heard = self.presence.as_ref()?.last_heard()?;
        (heard >= self.sign_since && heard <= now && now.saturating_duration_since(heard) <= HOLD_LIMIT)
            .then_some(heard)
    }

    /// Where the quiet after the user's last audio begins on the running
    /// clock: [`QUIET`] after it, or when the clock resumed if later (a
    /// break of the agent's own connection took back what came before).
    fn quiet_from(&self, heard: Instant) -> Instant {
        let from = heard + QUIET;
        self.clock.running_since().map_or(from, |since| from.max(since))
    }

    /// Up to when lived time is written at `now`: `now`, unless the user's
    /// audio stopped more than [`QUIET`] ago (and not too long ago): then
    /// only up to where that quiet began, so that a leave reported late
    /// finds the seconds since unwritten. Time held back is still lived: it
    /// counts against the balance and is written when audio returns or the
    /// hold lapses.
    fn write_until(&self, now: Instant) -> Instant {
        match self.last_heard(now) {
            Some(heard) if now.saturating_duration_since(heard) > QUIET => self.quiet_from(heard).min(now),
            _ => now,
        }
    }

    /// Whole seconds written or on their way: the clock never goes below them.
    fn committed_seconds(&self) -> i64 {
        match &self.unacked {
            Some(e) if !self.unacked_final => self.durable_seconds + (e.seq_to - e.seq_from + 1),
            _ => self.durable_seconds,
        }
    }

    /// The user left the room (or the agent's media went down): the clock
    /// pauses. If the user's audio had stopped more than [`QUIET`] before
    /// (the room reported the leave late), the quiet since is taken back:
    /// the clock stops [`QUIET`] after the audio stopped, where the held
    /// seconds began, never below the seconds written. At a leave, the part
    /// of that quiet up to the agent's last words is taken back at most
    /// [`FORGIVE_LIMIT`] in all per session (see [`Pause`]). A leave on
    /// time (within [`QUIET`] of the last packet) pauses now, as it always
    /// did. After the clock stopped for good with a hold open (see
    /// [`EndHold`]), the leave decides that hold instead. Returns the time
    /// taken back.
    pub fn pause_from_last_heard(&mut self, now: Instant, why: Pause) -> Duration {
        if self.end_hold.is_some() {
            return self.settle_end_hold(now, why);
        }
        let heard = self.last_heard(now);
        let ran_from = self.clock.running_since();
        let spoken = self.presence.as_ref().and_then(|p| p.spoken_until(now));
        let live_now = self.clock.live_ms(now);
        self.clock.pause(now);
        let Some((target, silent_ms)) =
            heard.and_then(|h| self.quiet_take_back(h, now, live_now, ran_from, spoken, why))
        else {
            return Duration::ZERO;
        };
        self.clock.stop_at(target);
        let taken = live_now - target;
        // The floor of written seconds cuts from the quiet's start, where
        // the talking was.
        self.forgiven_ms += (taken - silent_ms).max(0);
        Duration::from_millis(taken as u64)
    }

    /// Where the clock stops when the user is taken to have gone at `at`
    /// (with `live_ms` lived then, the clock running since `ran_from`, the
    /// agent talking until `spoken`), their audio last heard at `heard`:
    /// the live time to stop at and the part of the quiet taken back in
    /// which the agent said nothing; `None` when nothing is taken back
    /// (the audio stopped less than [`QUIET`] before `at`, or all of the
    /// quiet is already written or past the forgiveness left).
    fn quiet_take_back(
        &self,
        heard: Instant,
        at: Instant,
        live_ms: i64,
        ran_from: Option<Instant>,
        spoken: Option<Instant>,
        why: Pause,
    ) -> Option<(i64, i64)> {
        // A break of the agent's own connection took back what came before
        // the clock last resumed.
        let quiet_from_heard = |h: Instant| ran_from.map_or(h + QUIET, |since| (h + QUIET).max(since));
        let quiet_from = quiet_from_heard(heard);
        // Where the quiet would begin by the last packet's arrival.
        let arrived_quiet = self.presence.as_ref().map(|p| quiet_from_heard(p.arrived(heard)));
        let quiet_ms = at.saturating_duration_since(quiet_from).as_millis() as i64;
        // The quiet the agent may have talked through (the rest came after
        // its last words), and the part the sender's timestamps dated back
        // (both run from the quiet's start; the longer covers the other).
        let since_quiet =
            |t: Option<Instant>| t.map_or(0, |t| t.saturating_duration_since(quiet_from).as_millis() as i64);
        let talked_ms = match why {
            Pause::UserLeft => since_quiet(spoken).max(since_quiet(arrived_quiet.map(|a| a.min(at)))),
            Pause::Interrupted => 0,
        }
        .min(quiet_ms);
        let silent_ms = quiet_ms - talked_ms;
        let budget = (self.forgive_limit_ms - self.forgiven_ms).max(0);
        let target = (live_ms - silent_ms - talked_ms.min(budget)).max(self.committed_seconds() * 1000);
        (target < live_ms).then_some((target, silent_ms))
    }

    /// The clock is about to stop for good at `at` while it runs and
    /// charges: what the end leaves open (see [`EndHold`]).
    fn end_hold_at(&self, at: Instant) -> Option<EndHold> {
        if !self.draining() || self.closing {
            return None;
        }
        let presence = self.presence.as_ref()?;
        Some(EndHold {
            at,
            live_ms: self.clock.live_ms(at),
            ran_from: self.clock.running_since(),
            spoken: presence.spoken_until(at),
        })
    }

    /// The open end hold's verdict at `now`: where the clock would stop, and
    /// the silent part of what that takes back; `None` when the user's audio
    /// came back after the hold began, when it lapsed ([`HOLD_LIMIT`] after
    /// the last audio), or when there was no quiet to hold.
    fn end_hold_take_back(&self, now: Instant, why: Pause) -> Option<(i64, i64)> {
        let hold = self.end_hold?;
        let heard = self.presence.as_ref()?.last_heard()?;
        if heard < self.sign_since || now.saturating_duration_since(heard) > HOLD_LIMIT {
            return None;
        }
        self.quiet_take_back(heard, hold.at, hold.live_ms, hold.ran_from, hold.spoken, why)
    }

    /// Decides the open end hold at `now` (the session closes, or the leave
    /// or the break came): the quiet before the clock stopped is taken back
    /// as at a leave then, unless the user's audio came back. A balance
    /// that ran out then owes no remainder: like a leave, only the whole
    /// seconds up to the stop are charged. Returns the time taken back.
    pub fn settle_end_hold(&mut self, now: Instant, why: Pause) -> Duration {
        let verdict = self.end_hold_take_back(now, why);
        self.end_hold = None;
        let live = self.clock.live_ms(now);
        let Some((target, silent_ms)) = verdict.filter(|(t, _)| *t < live) else { return Duration::ZERO };
        self.clock.stop_at(target);
        let taken = live - target;
        self.forgiven_ms += (taken - silent_ms).max(0);
        if self.exhausted.is_some() && !self.final_sent && !self.unacked_final {
            self.exhausted = Some(Millis::ZERO);
        }
        Duration::from_millis(taken as u64)
    }

    /// The session closes at `now`: its clock stops for good, and a quiet
    /// it was holding is decided (see [`EndHold`]). Returns the time taken
    /// back.
    pub fn close(&mut self, now: Instant) -> Duration {
        // A start still unconfirmed stands.
        self.start_hold = None;
        if self.end_hold.is_none() {
            self.end_hold = self.end_hold_at(now);
        }
        // Heard lately: there, whatever the quiet at the stop was.
        let heard = self.presence.as_ref().and_then(|p| p.last_heard());
        if heard.is_some_and(|h| now.saturating_duration_since(h) < END_QUIET) {
            self.end_hold = None;
        }
        self.clock.pause(now);
        self.closing = true;
        self.settle_end_hold(now, Pause::UserLeft)
    }

    /// The end is decided at `now`: the clock stops for good (no resume),
    /// at most `cap_ms` of live time. Arrears as always: only the whole
    /// seconds lived up to this instant are charged.
    pub fn stop(&mut self, now: Instant, cap_ms: Option<i64>) {
        if self.end_hold.is_none() {
            self.end_hold = self.end_hold_at(now);
        }
        self.clock.pause(now);
        if let Some(cap) = cap_ms.filter(|c| self.clock.live_ms(now) > *c) {
            self.clock.stop_at(cap.max(0));
            // A remainder owed for time past the cap is owed no more (unless
            // it is already on its way to the database).
            if let Some(rem) = self.exhausted.filter(|_| !self.final_sent && !self.unacked_final) {
                let fraction = self.clock.live_ms(now) % 1000;
                let cost = (self.rate.ms_per_second() * fraction + 999) / 1000;
                self.exhausted = Some(Millis(rem.0.min(cost)));
            }
        }
        self.closing = true;
    }

    fn whole_seconds(&self, now: Instant) -> i64 {
        self.clock.live_ms(now) / 1000
    }

    /// Cost of lived whole seconds not yet durable (sent or not).
    pub fn unbilled(&self, now: Instant) -> Millis {
        Millis((self.whole_seconds(now) - self.durable_seconds).max(0) * self.rate.ms_per_second())
    }

    /// Everything owed and not yet durable: the unbilled whole seconds and a
    /// final remainder not yet acknowledged.
    fn owed(&self, now: Instant) -> i64 {
        let last = self.exhausted.filter(|_| !self.final_sent).map_or(0, |m| m.0);
        self.unbilled(now).0 + last
    }

    /// Running and still charged as it runs.
    fn draining(&self) -> bool {
        self.clock.running() && self.exhausted.is_none()
    }

    /// The entry the next batch carries for this session: the unacknowledged
    /// one again, or the newly lived whole seconds (plus the final remainder
    /// once exhausted); a heartbeat when there is nothing to charge.
    pub fn next_entry(&mut self, id: SessionId, now: Instant) -> TickEntry {
        if let Some(e) = &self.unacked {
            return e.clone();
        }
        // A start not yet confirmed writes nothing until it is, or until its
        // limit passes (it then stands).
        let start_held = self.start_hold.is_some_and(|from| now.saturating_duration_since(from) < START_HOLD_LIMIT);
        if !start_held {
            self.start_hold = None;
        }
        // A quiet the clock's stop left open is not written (nor the final
        // remainder) until it is decided; a verdict of nothing to take back
        // closes it.
        let held_to = self.end_hold.and_then(|_| self.end_hold_take_back(now, Pause::UserLeft)).map(|(t, _)| t);
        if held_to.is_none() {
            self.end_hold = None;
        }
        let has_final = self.exhausted.is_some() && !self.final_sent && held_to.is_none() && !start_held;
        let whole = match held_to {
            _ if start_held => self.durable_seconds,
            Some(to) => to.min(self.clock.live_ms(now)) / 1000,
            None => self.clock.live_ms(self.write_until(now)) / 1000,
        };
        let seconds = (whole - self.durable_seconds).max(0);
        let mut amount = seconds * self.rate.ms_per_second();
        let mut metered = seconds * 1000;
        let mut ticks = seconds;
        if let Some(rem) = self.exhausted.filter(|_| has_final) {
            amount += rem.0;
            metered += self.clock.live_ms(now) - whole * 1000;
            ticks += 1;
        }
        let entry = TickEntry {
            session: id,
            user: self.user,
            seq_from: self.durable_seq + 1,
            seq_to: self.durable_seq + ticks,
            amount: Millis(amount),
            metered_ms: metered,
            earned_ok: self.ad_supported,
        };
        if ticks > 0 {
            self.unacked = Some(entry.clone());
            self.unacked_final = has_final;
        }
        entry
    }

    /// Takes the database's answer for `entry`. Returns the shortfall when
    /// the cards could not pay all of it.
    pub fn acknowledge(&mut self, entry: &TickEntry, result: &TickResult) -> Millis {
        if entry.seq_from > entry.seq_to {
            return Millis::ZERO;
        }
        let short = match result {
            TickResult::Applied { short, .. } => *short,
            TickResult::AlreadyApplied => Millis::ZERO,
            TickResult::Closed | TickResult::OutOfOrder { .. } => return Millis::ZERO,
        };
        let ticks = entry.seq_to - entry.seq_from + 1;
        // Whether this entry carried the remainder is decided when it was
        // built, not now: the balance may have run out while it was in flight.
        let has_final = self.unacked_final && !self.final_sent && self.unacked.as_ref() == Some(entry);
        self.durable_seq = entry.seq_to;
        self.durable_seconds += if has_final { ticks - 1 } else { ticks };
        if has_final {
            self.final_sent = true;
        }
        self.unacked = None;
        self.unacked_final = false;
        short
    }

    /// Everything owed has been written.
    pub fn settled(&self, now: Instant) -> bool {
        self.unacked.is_none()
            && self.whole_seconds(now) <= self.durable_seconds
            && (self.exhausted.is_none() || self.final_sent)
    }
}

/// A user's money as this worker knows it.
#[derive(Debug, Clone, Copy)]
pub struct Account {
    /// Spendable funds (paid and earned) at the last durable write.
    pub funds: Funds,
}

impl Account {
    /// A user with only paid cards.
    pub fn paid(spendable: Millis) -> Account {
        Account { funds: Funds { paid: spendable, earned: Millis::ZERO } }
    }

    /// What `sessions` can spend together: the paid cards, and the earned
    /// ones when any of them is ad-supported. With sessions of both kinds
    /// running at once this is an upper bound for the others (the store
    /// never lets them draw earned cards: their shortfall ends them at the
    /// next tick, uncharged).
    fn spendable<'a>(&self, mut sessions: impl Iterator<Item = &'a Live>) -> Millis {
        self.funds.for_session(sessions.any(|l| l.ad_supported))
    }
}

/// When a user's running sessions exhaust the balance: the instant, and the
/// live time each running session has then.
#[derive(Debug, Clone, PartialEq)]
pub struct Exhaustion {
    pub at: Instant,
    pub stops: Vec<(SessionId, i64)>,
}

/// Live time, in ms, that the balance still pays for while a user's running
/// sessions run together, as a fraction `numerator / rate` (exact, so that
/// callers choose the rounding); `None` when none of them is running.
///
/// Exact per session: each running session has already lived part of its
/// current second, which the balance must also pay for (at its own rate).
fn time_left(account: Account, sessions: &[(SessionId, &Live)], now: Instant) -> Option<(i128, i128)> {
    let running = || sessions.iter().map(|(_, l)| *l).filter(|l| l.draining());
    let rate: i128 = running().map(|l| i128::from(l.rate.ms_per_second())).sum();
    if rate == 0 {
        return None;
    }
    let owed: i128 = sessions.iter().map(|(_, l)| i128::from(l.owed(now))).sum();
    // Cost of the current seconds' lived parts, in thousandths of a ms.
    let into_seconds: i128 =
        running().map(|l| i128::from(l.rate.ms_per_second()) * i128::from(l.clock.live_ms(now) % 1000)).sum();
    let spendable = account.spendable(running());
    Some(((i128::from(spendable.0) - owed) * 1000 - into_seconds, rate))
}

/// Remaining live time for a user's sessions at `now`, in ms, rounded down;
/// `None` when none of them is running.
pub fn remaining_ms(account: Account, sessions: &[(SessionId, &Live)], now: Instant) -> Option<i64> {
    let (num, rate) = time_left(account, sessions, now)?;
    Some(num.div_euclid(rate).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
}

/// The exhaustion instant of a user's running sessions, if their balance
/// runs out while they run. Rounded up to the millisecond: the lived time
/// covers the whole remainder, so no session pays for time it did not have.
pub fn exhaustion(account: Account, sessions: &[(SessionId, &Live)], now: Instant) -> Option<Exhaustion> {
    let (num, rate) = time_left(account, sessions, now)?;
    let left = (num.max(0) + rate - 1) / rate;
    let left = left.min(i128::from(MAX_WAIT_MS)) as i64;
    let stops =
        sessions.iter().filter(|(_, l)| l.draining()).map(|(id, l)| (*id, l.clock.live_ms(now) + left)).collect();
    Some(Exhaustion { at: now + Duration::from_millis(left as u64), stops })
}

/// Stops the exhausted sessions of a user (all their sessions: `ids`) at
/// their exact live time and owes the rest of the balance as their final
/// ticks: each session the cost of its own last fraction, so the cards end
/// at exactly zero and none pays more than its metered time at its rate.
pub fn exhaust(
    ids: &[SessionId],
    account: Account,
    ex: &Exhaustion,
    sessions: &mut HashMap<SessionId, Live>,
    now: Instant,
) {
    for (id, live_ms) in &ex.stops {
        if let Some(l) = sessions.get_mut(id) {
            if l.end_hold.is_none() {
                l.end_hold = l.end_hold_at(ex.at).map(|h| EndHold { live_ms: *live_ms, ..h });
            }
            l.clock.stop_at(*live_ms);
        }
    }
    let owed: i64 = ids.iter().filter_map(|id| sessions.get(id)).map(|l| l.owed(now)).sum();
    let spendable = account.spendable(ex.stops.iter().filter_map(|(id, _)| sessions.get(id)));
    let remainder = (spendable.0 - owed).max(0);
    // Each stopped session's last fraction at its rate, in thousandths of a ms.
    let weights: Vec<(SessionId, i128)> = ex
        .stops
        .iter()
        .filter_map(|(id, _)| sessions.get(id).map(|l| (*id, l)))
        .map(|(id, l)| (id, i128::from(l.rate.ms_per_second()) * i128::from(l.clock.live_ms(now).rem_euclid(1000))))
        .collect();
    for (id, share) in split_remainder(remainder, &weights) {
        if let Some(l) = sessions.get_mut(&id) {
            l.exhausted = Some(Millis(share));
        }
    }
}

/// Splits `remainder` ms in proportion to `weights` (each session's exact
/// cost of its last fraction, in thousandths of a ms), largest fractions
/// first for the last few ms. No share exceeds its weight rounded up to the
/// ms; what the weights cannot cover is charged to no one.
fn split_remainder(remainder: i64, weights: &[(SessionId, i128)]) -> Vec<(SessionId, i64)> {
    let total: i128 = weights.iter().map(|(_, w)| *w).sum();
    let remainder = i128::from(remainder.max(0)).min(total / 1000);
    if total == 0 {
        return weights.iter().map(|(id, _)| (*id, 0)).collect();
    }
    let mut shares: Vec<(SessionId, i128, i128)> =
        weights.iter().map(|(id, w)| (*id, remainder * w / total, remainder * w % total)).collect();
    let mut left = remainder - shares.iter().map(|(_, s, _)| s).sum::<i128>();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|a, b| shares[*b].2.cmp(&shares[*a].2));
    for i in order {
        if left == 0 {
            break;
        }
        if shares[i].2 > 0 {
            shares[i].1 += 1;
            left -= 1;
        }
    }
    shares.into_iter().map(|(id, s, _)| (id, s as i64)).collect()
}

/// Warning thresholds newly crossed (remaining at or below them), and
/// thresholds to re-arm because the remaining time grew back above them.
pub fn due_warnings(live: &mut Live, remaining_ms: i64, thresholds_ms: &[i64]) -> (Vec<i64>, bool) {
    let mut due = Vec::new();
    for &t in thresholds_ms {
        if remaining_ms <= t && !live.warned.contains(&t) {
            live.warned.insert(t);
            due.push(t);
        }
    }
    let before = live.warned.len();
    live.warned.retain(|&t| remaining_ms <= t);
    (due, live.warned.len() < before)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn live(rate: &str, now: Instant) -> (SessionId, Live) {
        (SessionId(Uuid::from_u128(1)), Live::new(UserId(Uuid::from_u128(9)), rate.parse().unwrap(), now))
    }

    #[test]
    fn a_stopped_clock_never_runs_again_and_is_capped_exactly() {
        let t0 = Instant::now();
        let (_, mut l) = live("1", t0);
        l.stop(t0 + Duration::from_millis(60_480), Some(60_000));
        assert_eq!(l.clock.live_ms(t0 + Duration::from_secs(90)), 60_000);
        assert!(!l.clock.running() && l.closing);
        let (_, mut l) = live("1", t0);
        l.stop(t0 + Duration::from_millis(2_700), None);
        assert_eq!(l.clock.live_ms(t0 + Duration::from_secs(9)), 2_700);
        assert_eq!(l.unbilled(t0 + Duration::from_secs(9)), Millis(2_000), "arrears: whole seconds only");
    }

    fn applied(amount: i64) -> TickResult {
        TickResult::Applied { applied: Millis(amount), short: Millis::ZERO }
    }

    #[test]
    fn only_lived_whole_seconds_are_asked_for() {
        let t0 = Instant::now();
        let (id, mut l) = live("1.5", t0);
        let e = l.next_entry(id, t0 + Duration::from_millis(2700));
        assert_eq!((e.seq_from, e.seq_to, e.amount, e.metered_ms), (1, 2, Millis(3000), 2000));
        l.acknowledge(&e, &applied(3000));
        let e = l.next_entry(id, t0 + Duration::from_millis(2900));
        assert!(e.seq_from > e.seq_to, "nothing new: a heartbeat");
    }

    #[test]
    fn an_unconfirmed_start_writes_nothing_until_decided_and_moves_to_the_confirmed_instant() {
        let t0 = Instant::now();
        let (id, mut l) = live("2", t0);
        l.clock.pause(t0);
        l.resume_unconfirmed(ms(t0, 1_000));
        let e = l.next_entry(id, ms(t0, 4_500));
        assert!(e.seq_from > e.seq_to, "held: a heartbeat, {e:?}");
        // The client learned of the start at 3.2 s: 2.2 s come off.
        assert_eq!(l.confirm_start(ms(t0, 5_000), Some(ms(t0, 3_200))), Duration::from_millis(2_200));
        assert_eq!(l.clock.live_ms(ms(t0, 5_000)), 1_800);
        let e = l.next_entry(id, ms(t0, 5_000));
        assert_eq!((e.seq_from, e.seq_to, e.amount), (1, 1, Millis(2_000)), "only the second after it");
        l.acknowledge(&e, &applied(2_000));
        assert!(l.clock.running());
        assert_eq!(l.clock.live_ms(ms(t0, 9_200)), 6_000, "the clock runs on from the confirmed start");
        // A second decision changes nothing.
        assert_eq!(l.confirm_start(ms(t0, 9_200), Some(ms(t0, 9_000))), Duration::ZERO);
        assert_eq!(l.forgiven_ms, 2_200, "the agent was talking: it counts as forgiven");

        // A receipt withheld to listen for free gains at most the forgiveness left.
        let (_, mut l) = live("1", t0);
        l.forgive_limit_ms = 3_000;
        l.forgiven_ms = 1_000;
        l.clock.pause(t0);
        l.resume_unconfirmed(t0);
        assert_eq!(l.confirm_start(ms(t0, 4_900), Some(ms(t0, 3_900))), Duration::from_millis(2_000));
        assert_eq!((l.forgiven_ms, l.clock.live_ms(ms(t0, 4_900))), (3_000, 2_900));

        // An instant before the held start (or none) keeps it.
        for at in [Some(ms(t0, 500)), None] {
            let (id, mut l) = live("1", t0);
            l.clock.pause(t0);
            l.resume_unconfirmed(ms(t0, 1_000));
            assert_eq!(l.confirm_start(ms(t0, 4_000), at), Duration::ZERO);
            assert_eq!(l.next_entry(id, ms(t0, 4_000)).seq_to, 3);
        }

        // Undecided, it stands after the limit, and at the close.
        let (id, mut l) = live("1", t0);
        l.clock.pause(t0);
        l.resume_unconfirmed(t0);
        let limit = START_HOLD_LIMIT.as_millis() as u64;
        let e = l.next_entry(id, ms(t0, limit - 1));
        assert!(e.seq_from > e.seq_to, "{e:?}");
        assert_eq!(l.next_entry(id, ms(t0, limit)).seq_to, limit as i64 / 1000);
        let (id, mut l) = live("1", t0);
        l.clock.pause(t0);
        l.resume_unconfirmed(t0);
        l.close(ms(t0, 3_500));
        assert_eq!(l.next_entry(id, ms(t0, 3_500)).seq_to, 3);

        // A clock that already ran (a resume later in the session) is not held.
        let (id, mut l) = live("1", t0);
        l.clock.pause(ms(t0, 2_000));
        l.resume_unconfirmed(ms(t0, 5_000));
        assert_eq!(l.next_entry(id, ms(t0, 6_000)).seq_to, 3);
    }

    #[test]
    fn a_card_that_runs_out_before_the_start_is_confirmed_owes_no_remainder_for_the_time_taken_off() {
        let t0 = Instant::now();
        let (id, mut l) = live("1", t0);
        l.clock.pause(t0);
        l.resume_unconfirmed(t0);
        let ex = exhaustion(Account::paid(Millis(3_400)), &[(id, &l)], t0).unwrap();
        assert_eq!(ex.stops, vec![(id, 3_400)]);
        let mut l = exhaust_one(id, l, 3_400, &ex);
        let e = l.next_entry(id, ms(t0, 3_500));
        assert!(e.seq_from > e.seq_to, "nothing written while held: {e:?}");
        // The client had the start only at 1.5 s: 1.9 s lived, the whole
        // second charged, and the last fraction's tick costs nothing.
        assert_eq!(l.confirm_start(ms(t0, 3_600), Some(ms(t0, 1_500))), Duration::from_millis(1_500));
        let e = l.next_entry(id, ms(t0, 3_600));
        assert_eq!((e.seq_to, e.amount, e.metered_ms), (2, Millis(1_000), 1_900), "{e:?}");
    }

    #[test]
    fn an_unacknowledged_entry_is_resent_unchanged() {
        let t0 = Instant::now();
        let (id, mut l) = live("1", t0);
        let first = l.next_entry(id, t0 + Duration::from_millis(1100));
        // The write failed or its answer was lost: later batches resend it.
        let again = l.next_entry(id, t0 + Duration::from_millis(3100));
        assert_eq!(first, again);
        l.acknowledge(&again, &TickResult::AlreadyApplied);
        let next = l.next_entry(id, t0 + Duration::from_millis(3100));
        assert_eq!((next.seq_from, next.seq_to, next.amount), (2, 3, Millis(2000)));
    }

    #[test]
    fn paused_time_does_not_accrue() {
        let t0 = Instant::now();
        let mut c = Clock::started(t0);
        c.pause(t0 + Duration::from_millis(700));
        c.resume(t0 + Duration::from_millis(5000));
        assert_eq!(c.live_ms(t0 + Duration::from_millis(5400)), 1100);
    }

    #[test]
    fn a_start_confirmed_late_counts_from_when_it_happened() {
        let t0 = Instant::now();
        let (_, mut l) = live("1", t0);
        l.clock.pause(t0);
        // Confirmed at 2.3 s, the start having been at 1.5 s.
        l.resume(t0 + Duration::from_millis(1500), true);
        assert_eq!(l.clock.live_ms(t0 + Duration::from_millis(2300)), 800);
        assert_eq!(l.sign_since, t0 + Duration::from_millis(1500), "audio counts as a sign from the start");
    }

    #[test]
    fn exhaustion_stops_at_the_remainder_and_charges_it() {
        let t0 = Instant::now();
        let (id, l) = live("1.5", t0);
        let mut sessions = HashMap::from([(id, l)]);
        let account = Account::paid(Millis(4000)); // 2 s and 1000/1500 of a third
        let now = t0 + Duration::from_millis(200);
        let pairs: Vec<(SessionId, &Live)> = sessions.iter().map(|(k, v)| (*k, v)).collect();
        let ex = exhaustion(account, &pairs, now).unwrap();
        // 2666.67 ms are paid for: the clock stops at the next whole ms.
        assert_eq!(ex.stops, vec![(id, 2667)]);
        assert_eq!(ex.at, now + Duration::from_millis(2467));
        exhaust(&[id], account, &ex, &mut sessions, ex.at);
        let l = sessions.get_mut(&id).unwrap();
        let e = l.next_entry(id, ex.at + Duration::from_secs(5));
        assert_eq!((e.seq_from, e.seq_to, e.amount, e.metered_ms), (1, 3, Millis(4000), 2667));
        l.acknowledge(&e, &applied(4000));
        assert!(l.settled(ex.at + Duration::from_secs(9)));
    }

    #[test]
    fn sessions_running_out_together_each_owe_the_cost_of_their_own_last_fraction() {
        let t0 = Instant::now();
        let user = UserId(Uuid::from_u128(9));
        let rate: Rate = "16".parse().unwrap();
        let ids: Vec<SessionId> = (1..=3).map(|n| SessionId(Uuid::from_u128(n))).collect();
        // Opened 0, 100 and 350 ms apart; 60 s of card at 48 s a second.
        let mut sessions: HashMap<SessionId, Live> = ids
            .iter()
            .zip([0, 100, 350])
            .map(|(id, ms)| (*id, Live::new(user, rate, t0 + Duration::from_millis(ms))))
            .collect();
        let account = Account::paid(Millis(60_000));
        let now = t0 + Duration::from_millis(400);
        let pairs: Vec<(SessionId, &Live)> = ids.iter().map(|id| (*id, &sessions[id])).collect();
        let ex = exhaustion(account, &pairs, now).unwrap();
        exhaust(&ids, account, &ex, &mut sessions, ex.at);
        let mut total = 0;
        for id in &ids {
            let l = sessions.get_mut(id).unwrap();
            let e = l.next_entry(*id, ex.at + Duration::from_secs(9));
            let exact = (e.metered_ms * 16_000 + 999) / 1000;
            assert!(e.amount.0 <= exact, "{} ms asked for {} ms lived (exact {exact})", e.amount.0, e.metered_ms);
            total += e.amount.0;
        }
        assert_eq!(total, 60_000, "the card ends at exactly zero");
    }

    #[test]
    fn an_entry_sent_before_the_balance_ran_out_is_acknowledged_as_whole_seconds_only() {
        let t0 = Instant::now();
        let (id, l) = live("12.5", t0);
        let mut sessions = HashMap::from([(id, l)]);
        // Four seconds sent, unacknowledged, when the balance runs out at 4.8 s.
        let sent = sessions.get_mut(&id).unwrap().next_entry(id, t0 + Duration::from_millis(4100));
        assert_eq!((sent.seq_to, sent.amount), (4, Millis(50_000)));
        let account = Account::paid(Millis(60_000));
        let now = t0 + Duration::from_millis(4200);
        let pairs: Vec<(SessionId, &Live)> = vec![(id, &sessions[&id])];
        let ex = exhaustion(account, &pairs, now).unwrap();
        assert_eq!(ex.stops, vec![(id, 4800)]);
        exhaust(&[id], account, &ex, &mut sessions, ex.at);
        let l = sessions.get_mut(&id).unwrap();
        let later = ex.at + Duration::from_secs(1);
        assert_eq!(l.next_entry(id, later), sent, "the unacknowledged entry is resent unchanged");
        l.acknowledge(&sent, &TickResult::AlreadyApplied);
        assert!(!l.settled(later), "the remainder is still owed");
        let last = l.next_entry(id, later);
        assert_eq!((last.seq_from, last.seq_to, last.amount, last.metered_ms), (5, 5, Millis(10_000), 800));
        l.acknowledge(&last, &applied(10_000));
        assert!(l.settled(later));
        assert_eq!(l.durable_seconds, 4);
    }

    #[test]
    fn a_cap_below_the_exhaustion_instant_cuts_the_remainder_owed() {
        let t0 = Instant::now();
        let (id, l) = live("16", t0);
        let mut sessions = HashMap::from([(id, l)]);
        let account = Account::paid(Millis(30_000)); // 1.875 s at 16x
        let pairs: Vec<(SessionId, &Live)> = vec![(id, &sessions[&id])];
        let ex = exhaustion(account, &pairs, t0).unwrap();
        exhaust(&[id], account, &ex, &mut sessions, ex.at);
        let l = sessions.get_mut(&id).unwrap();
        assert_eq!(l.exhausted, Some(Millis(14_000)));
        // The time limit (1.5 s) is applied late, after the balance ran out.
        l.stop(ex.at, Some(1500));
        let e = l.next_entry(id, ex.at + Duration::from_secs(1));
        assert_eq!((e.amount, e.metered_ms), (Millis(24_000), 1500), "one second and half of the next");
    }

    #[test]
    fn warnings_fire_once_and_rearm_when_the_balance_grows() {
        let t0 = Instant::now();
        let (_, mut l) = live("1", t0);
        let th = [60_000, 10_000];
        assert_eq!(due_warnings(&mut l, 59_000, &th), (vec![60_000], false));
        assert_eq!(due_warnings(&mut l, 58_000, &th), (vec![], false));
        assert_eq!(due_warnings(&mut l, 9_000, &th), (vec![10_000], false));
        assert_eq!(due_warnings(&mut l, 300_000, &th), (vec![], true));
        assert_eq!(due_warnings(&mut l, 59_000, &th), (vec![60_000], false));
    }

    type Cell = Arc<std::sync::Mutex<Option<Instant>>>;

    fn heard_at(l: &mut Live) -> Cell {
        let cell = Cell::default();
        let read = cell.clone();
        l.presence = Some(Presence::new(move || *read.lock().unwrap()));
        cell
    }

    /// The user's last audio and the agent's last words, as cells a test
    /// sets (the agent never spoke until its cell is set).
    fn heard_and_spoken(l: &mut Live) -> (Cell, Cell) {
        let (heard, spoken) = (Cell::default(), Cell::default());
        let (h, s) = (heard.clone(), spoken.clone());
        l.presence = Some(Presence::new(move || *h.lock().unwrap()).with_spoken(move || *s.lock().unwrap()));
        (heard, spoken)
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_leave_reported_late_is_not_charged_past_the_users_last_audio() {
        let t0 = Instant::now();
        let (id, mut l) = live("1", t0);
        let heard = heard_at(&mut l);
        *heard.lock().unwrap() = Some(ms(t0, 10_200));
        // 0.8 s of quiet at the batch: written up to 0.5 s after the last packet.
        let e = l.next_entry(id, ms(t0, 11_000));
        assert_eq!((e.seq_to, e.metered_ms), (10, 10_000));
        l.acknowledge(&e, &applied(10_000));
        let e = l.next_entry(id, ms(t0, 12_000));
        assert_eq!(e.seq_to - e.seq_from + 1, 0, "held: a heartbeat only");
        assert_eq!(l.unbilled(ms(t0, 12_000)), Millis(2_000), "held time still counts against the balance");
        // The leave arrives 2.6 s after the user's audio stopped: paused
        // where the hold began, half a second after the last packet.
        assert_eq!(l.pause_from_last_heard(ms(t0, 12_800), Pause::UserLeft), Duration::from_millis(2_100));
        assert_eq!(l.clock.live_ms(ms(t0, 20_000)), 10_700);
        l.stop(ms(t0, 13_000), None);
        let e = l.next_entry(id, ms(t0, 13_000));
        assert_eq!(e.seq_to - e.seq_from + 1, 0, "nothing more is owed");
        assert!(l.settled(ms(t0, 13_000)));
    }

    #[test]
    fn a_long_silence_is_charged_in_full_and_a_break_of_the_agents_connection_is_not_capped() {
        let t0 = Instant::now();
        let (id, mut l) = live("1", t0);
        let heard = heard_at(&mut l);
        *heard.lock().unwrap() = Some(ms(t0, 3_950));
        // Under QUIET: written to now.
        assert_eq!(l.next_entry(id, ms(t0, 4_010)).seq_to, 4);
        l.acknowledge(&l.unacked.clone().unwrap(), &applied(4_000));
        // Quiet past the hold limit: the hold lapses and every second is written.
        let e = l.next_entry(id, ms(t0, 34_100));
        assert_eq!(e.seq_to, 34, "30.15 s of silence without a leave is charged");
        l.acknowledge(&e, &applied(30_000));
        assert_eq!(
            l.pause_from_last_heard(ms(t0, 34_300), Pause::UserLeft),
            Duration::ZERO,
            "too long ago to be a sign"
        );
        assert_eq!(l.clock.live_ms(ms(t0, 35_000)), 34_300);

        // Heard at 40.2 s (after a resume at 40 s); the agent's media is found
        // down at 52 s: the 11.3 s since the hold began are taken back, past
        // the leaves' 5 s, and the leaves' allowance is untouched.
        l.resume(ms(t0, 40_000), true);
        *heard.lock().unwrap() = Some(ms(t0, 40_200));
        for at in (41_000..52_000).step_by(1000) {
            let e = l.next_entry(id, ms(t0, at));
            assert_eq!(e.seq_to, 35, "held at {at} ms: written up to 40.7 s, 35 s lived");
            l.acknowledge(&e, &applied(1_000));
        }
        assert_eq!(l.pause_from_last_heard(ms(t0, 52_000), Pause::Interrupted), Duration::from_millis(11_300));
        assert_eq!(l.clock.live_ms(ms(t0, 60_000)), 34_300 + 700);
        assert_eq!(l.forgiven_ms, 0);
    }

    #[test]
    fn a_leave_within_quiet_of_the_audio_and_silence_since_the_last_resume_take_nothing_back() {
        let t0 = Instant::now();
        let (id, mut l) = live("1", t0);
        let heard = heard_at(&mut l);
        *heard.lock().unwrap() = Some(ms(t0, 4_900));
        assert_eq!(
            l.pause_from_last_heard(ms(t0, 5_000), Pause::UserLeft),
            Duration::ZERO,
            "a leave on time pauses now"
        );
        assert_eq!(l.clock.live_ms(ms(t0, 6_000)), 5_000);
        l.resume(ms(t0, 8_000), true);
        // Not heard since the resume: written in full, and the pause is not back-dated.
        assert_eq!(l.next_entry(id, ms(t0, 10_000)).seq_to, 7);
        l.acknowledge(&l.unacked.clone().unwrap(), &applied(7_000));
        assert_eq!(l.pause_from_last_heard(ms(t0, 10_500), Pause::UserLeft), Duration::ZERO);
        assert_eq!(l.clock.live_ms(ms(t0, 11_000)), 7_500);
    }

    #[test]
    fn a_session_is_forgiven_at_most_the_limit_in_all() {
        let t0 = Instant::now();
        let (_, mut l) = live("1", t0);
        let heard = heard_at(&mut l);
        let mut at = 0;
        let mut forgiven = Duration::ZERO;
        // A client that sends one packet at each rejoin and leaves 4 s later.
        for _ in 0..5 {
            *heard.lock().unwrap() = Some(ms(t0, at));
            forgiven += l.pause_from_last_heard(ms(t0, at + 4_000), Pause::UserLeft);
            at += 5_000;
            l.resume(ms(t0, at), true);
        }
        assert_eq!(forgiven, FORGIVE_LIMIT);
        assert_eq!(l.forgiven_ms, 5_000);
        assert_eq!(l.clock.live_ms(ms(t0, at)), 20_000 - 5_000);
    }

    #[test]
    fn a_user_forgiven_near_the_hourly_limit_is_forgiven_only_what_is_left() {
        assert_eq!(Live::forgive_limit_after(0), 5_000);
        assert_eq!(Live::forgive_limit_after(12_000), 3_000);
        assert_eq!(Live::forgive_limit_after(15_000), 0);
        assert_eq!(Live::forgive_limit_after(40_000), 0);
        let t0 = Instant::now();
        let (_, mut l) = live("1", t0);
        let (heard, spoken) = heard_and_spoken(&mut l);
        l.forgive_limit_ms = Live::forgive_limit_after(12_000);
        // Audio to 10 s, the agent talking to 14 s, silent after; the leave
        // at 16 s: the 2 s of silence whole, 3 of the 3.5 s of talking.
        *heard.lock().unwrap() = Some(ms(t0, 10_000));
        *spoken.lock().unwrap() = Some(ms(t0, 14_000));
        assert_eq!(l.pause_from_last_heard(ms(t0, 16_000), Pause::UserLeft), Duration::from_millis(5_000));
        assert_eq!(l.forgiven_ms, 3_000);
    }

    #[test]
    fn audio_dated_back_by_its_timestamps_shares_the_limit_with_the_agents_talking() {
        let t0 = Instant::now();
        let (_, mut l) = live("1", t0);
        let (heard, arrived) = (Cell::default(), Cell::default());
        let (h, a) = (heard.clone(), arrived.clone());
        l.presence = Some(
            Presence::new(move || *h.lock().unwrap()).with_spoken(|| None).with_arrival(move || *a.lock().unwrap()),
        );
        // The last packet arrived at 12 s, its audio captured at 10 s (a
        // queue on the way); the leave comes at 13 s, the agent silent. The
        // quiet after the arrival is taken back whole, the 2 s before it
        // count against the limit.
        *heard.lock().unwrap() = Some(ms(t0, 10_000));
        *arrived.lock().unwrap() = Some(ms(t0, 12_000));
        assert_eq!(l.pause_from_last_heard(ms(t0, 13_000), Pause::UserLeft), Duration::from_millis(2_500));
        assert_eq!(l.clock.live_ms(ms(t0, 13_000)), 10_500);
        assert_eq!(l.forgiven_ms, 2_000);
        // Back, and a sender whose timestamps claim 4 s of queue, leaving
        // just after its last packet: 3 s are left of the limit.
        l.resume(ms(t0, 20_000), true);
        *heard.lock().unwrap() = Some(ms(t0, 26_000));
        *arrived.lock().unwrap() = Some(ms(t0, 30_000));
        assert_eq!(l.pause_from_last_heard(ms(t0, 30_500), Pause::UserLeft), Duration::from_millis(3_000));
        assert_eq!(l.forgiven_ms, 5_000);
        // Without the arrival (or with it on the capture), nothing is capped.
        l.resume(ms(t0, 40_000), true);
        *heard.lock().unwrap() = Some(ms(t0, 45_000));
        *arrived.lock().unwrap() = Some(ms(t0, 45_000));
        assert_eq!(l.pause_from_last_heard(ms(t0, 47_500), Pause::UserLeft), Duration::from_millis(2_000));
    }

    #[test]
    fn only_the_quiet_the_agent_talked_through_is_capped_at_leaves() {
        let t0 = Instant::now();
        let (_, mut l) = live("1", t0);
        let (heard, spoken) = heard_and_spoken(&mut l);

        // A user whose leave comes 20 s after their audio, the agent silent
        // throughout (a leave lost with a LiveKit node): the whole quiet is
        // taken back, and the allowance is untouched.
        *heard.lock().unwrap() = Some(ms(t0, 10_000));
        assert_eq!(l.pause_from_last_heard(ms(t0, 30_500), Pause::UserLeft), Duration::from_millis(20_000));
        assert_eq!(l.clock.live_ms(ms(t0, 40_000)), 10_500);
        assert_eq!(l.forgiven_ms, 0);

        // Back at 40 s. A client that stops sending at 41 s and listens to
        // the agent talk until 49 s, then goes: of the 8 s the agent talked
        // through (from 41.5 s), 5 s are taken back, and the 3 s of silence
        // after its last words.
        l.resume(ms(t0, 40_000), true);
        *heard.lock().unwrap() = Some(ms(t0, 41_000));
        *spoken.lock().unwrap() = Some(ms(t0, 49_500));
        assert_eq!(l.pause_from_last_heard(ms(t0, 52_500), Pause::UserLeft), Duration::from_millis(8_000));
        assert_eq!(l.clock.live_ms(ms(t0, 60_000)), 10_500 + 4_500);
        assert_eq!(l.forgiven_ms, 5_000);

        // Again: the allowance is spent, so the talking is charged in full;
        // the silence after it is still not.
        l.resume(ms(t0, 60_000), true);
        *heard.lock().unwrap() = Some(ms(t0, 60_000));
        *spoken.lock().unwrap() = Some(ms(t0, 64_500));
        assert_eq!(l.pause_from_last_heard(ms(t0, 70_500), Pause::UserLeft), Duration::from_millis(6_000));
        assert_eq!(l.clock.live_ms(ms(t0, 80_000)), 15_000 + 4_500);

        // An agent that never spoke: the whole quiet.
        let (_, mut quiet) = live("2", t0);
        quiet.presence = Some(Presence::new(move || Some(ms(t0, 1_000))).with_spoken(|| None));
        assert_eq!(quiet.pause_from_last_heard(ms(t0, 16_500), Pause::UserLeft), Duration::from_millis(15_000));
        assert_eq!(quiet.forgiven_ms, 0);
    }

    #[test]
    fn the_users_last_audio_stays_a_sign_across_a_break_of_the_agents_connection() {
        let t0 = Instant::now();
        let (id, mut l) = live("1", t0);
        // An agent that says nothing (so the whole quiet may be taken back).
        let (heard, _) = heard_and_spoken(&mut l);
        // The user's audio stops at 10 s (their leave is lost with a node);
        // the agent's connection breaks at 12 s and is back at 14 s, with
        // the user still listed; the leave reaches the agent at 30 s.
        *heard.lock().unwrap() = Some(ms(t0, 10_000));
        assert_eq!(l.pause_from_last_heard(ms(t0, 12_000), Pause::Interrupted), Duration::from_millis(1_500));
        l.resume(ms(t0, 14_000), false);
        let e = l.next_entry(id, ms(t0, 20_000));
        assert_eq!(e.seq_to, 10, "held: written only up to where the quiet began");
        l.acknowledge(&e, &applied(10_000));
        assert_eq!(l.pause_from_last_heard(ms(t0, 30_000), Pause::UserLeft), Duration::from_millis(16_000));
        assert_eq!(l.clock.live_ms(ms(t0, 40_000)), 10_500);
        assert_eq!(l.forgiven_ms, 0);

        // A user who rejoined at 40 s and has been silent since gives no sign.
        let (_, mut back) = live("2", t0);
        let heard = heard_at(&mut back);
        *heard.lock().unwrap() = Some(ms(t0, 10_000));
        back.clock.pause(ms(t0, 12_000));
        back.resume(ms(t0, 40_000), true);
        assert_eq!(back.pause_from_last_heard(ms(t0, 45_000), Pause::UserLeft), Duration::ZERO);
        assert_eq!(back.clock.live_ms(ms(t0, 50_000)), 17_000);
    }

    /// One session with 3 s written and `card_ms` left on the card after
    /// them, whose balance runs out (the exhaustion computed at `now`), with the user and the agent
    /// as cells a test sets.
    fn running_out(card_ms: i64, t0: Instant, now: Instant) -> (SessionId, Live, Exhaustion, Cell, Cell) {
        let (id, mut l) = live("1", t0);
        let (heard, spoken) = heard_and_spoken(&mut l);
        *heard.lock().unwrap() = Some(ms(t0, 4_000));
        let e = l.next_entry(id, ms(t0, 3_000));
        l.acknowledge(&e, &applied(3_000));
        let ex = exhaustion(Account::paid(Millis(card_ms)), &[(id, &l)], now).unwrap();
        (id, l, ex, heard, spoken)
    }

    fn exhaust_one(id: SessionId, l: Live, card_ms: i64, ex: &Exhaustion) -> Live {
        let mut sessions = HashMap::from([(id, l)]);
        exhaust(&[id], Account::paid(Millis(card_ms)), ex, &mut sessions, ex.at);
        sessions.remove(&id).unwrap()
    }

    #[test]
    fn a_card_that_runs_out_in_a_hold_is_charged_the_quiet_only_if_the_user_is_heard_again() {
        // Audio until 4 s, a card that lasts to 10.4 s, the agent silent: the balance runs
        // out 5.9 s into the hold.
        let t0 = Instant::now();
        let (id, l, ex, _, _) = running_out(7_400, t0, ms(t0, 4_200));
        assert_eq!(ex.stops, vec![(id, 10_400)]);
        let mut l = exhaust_one(id, l, 7_400, &ex);
        // The hang-up runs: only the seconds before the quiet are written,
        // and not the final remainder.
        let e = l.next_entry(id, ms(t0, 10_500));
        assert_eq!((e.seq_to, e.amount), (4, Millis(1_000)), "held: written up to where the quiet began");
        l.acknowledge(&e, &applied(1_000));
        assert!(!l.settled(ms(t0, 11_000)));
        // The session closes with the user still quiet: the quiet is taken
        // back as at a leave when the card ran out, and no remainder is owed.
        assert_eq!(l.close(ms(t0, 12_000)), Duration::from_millis(5_900));
        let e = l.next_entry(id, ms(t0, 12_000));
        assert_eq!((e.seq_from, e.seq_to, e.amount, e.metered_ms), (5, 5, Millis::ZERO, 500));
        l.acknowledge(&e, &applied(0));
        assert!(l.settled(ms(t0, 12_000)));
        assert_eq!(l.forgiven_ms, 0, "the agent said nothing in that quiet");

        // The same user heard again after the card ran out (their audio was
        // only late): every second is charged, and the card ends at zero.
        let (id, l, ex, heard, _) = running_out(7_400, t0, ms(t0, 4_200));
        let mut l = exhaust_one(id, l, 7_400, &ex);
        let e = l.next_entry(id, ms(t0, 10_500));
        l.acknowledge(&e, &applied(1_000));
        *heard.lock().unwrap() = Some(ms(t0, 10_450));
        let e = l.next_entry(id, ms(t0, 11_000));
        assert_eq!((e.seq_from, e.seq_to, e.amount, e.metered_ms), (5, 11, Millis(6_400), 6_400));
        l.acknowledge(&e, &applied(6_400));
        assert_eq!(l.close(ms(t0, 12_000)), Duration::ZERO);
        assert!(l.settled(ms(t0, 12_000)));

        // A hold that lapses (30 s after the last audio) before the close is
        // charged, as a running session's is.
        let (id, l, ex, _, _) = running_out(7_400, t0, ms(t0, 4_200));
        let mut l = exhaust_one(id, l, 7_400, &ex);
        let e = l.next_entry(id, ms(t0, 34_100));
        assert_eq!((e.seq_to, e.amount), (11, Millis(7_400)));
    }

    #[test]
    fn the_agents_talking_before_the_card_ran_out_counts_against_the_limit_and_its_goodbye_does_not() {
        let t0 = Instant::now();
        let (id, l, ex, _, spoken) = running_out(7_400, t0, ms(t0, 4_200));
        // The agent talked until 9 s; after the card ran out it says goodbye.
        *spoken.lock().unwrap() = Some(ms(t0, 9_000));
        let mut l = exhaust_one(id, l, 7_400, &ex);
        *spoken.lock().unwrap() = Some(ms(t0, 11_500));
        // Of the quiet from 4.5 s: the 4.5 s it talked through are forgiven
        // (within the 5 s), the 1.4 s of silence after them too.
        assert_eq!(l.close(ms(t0, 12_000)), Duration::from_millis(5_900));
        assert_eq!(l.forgiven_ms, 4_500);

        // Talking through all of it: 5 s at most.
        let (id, l, ex, _, spoken) = running_out(7_400, t0, ms(t0, 4_200));
        *spoken.lock().unwrap() = Some(ms(t0, 10_400));
        let mut l = exhaust_one(id, l, 7_400, &ex);
        assert_eq!(l.close(ms(t0, 12_000)), FORGIVE_LIMIT);
        assert_eq!(l.clock.live_ms(ms(t0, 13_000)), 5_400);
    }

    #[test]
    fn a_leave_or_break_after_the_end_decides_the_hold_at_once_and_a_cap_still_bounds_it() {
        let t0 = Instant::now();
        // The agent's connection is found broken after the card ran out:
        // the whole quiet is taken back, talked through or not.
        let (id, l, ex, _, spoken) = running_out(7_400, t0, ms(t0, 4_200));
        *spoken.lock().unwrap() = Some(ms(t0, 10_400));
        let mut l = exhaust_one(id, l, 7_400, &ex);
        assert_eq!(l.pause_from_last_heard(ms(t0, 11_000), Pause::Interrupted), Duration::from_millis(5_900));
        assert_eq!(l.close(ms(t0, 12_000)), Duration::ZERO, "decided");
        assert_eq!(l.clock.live_ms(ms(t0, 13_000)), 4_500);

        // A session limit reached in a hold (the end decided at 65 s with a
        // 60 s cap, the audio gone at 55 s): stopped where the quiet began.
        let (id, mut l) = live("1", t0);
        let (heard, _) = heard_and_spoken(&mut l);
        *heard.lock().unwrap() = Some(ms(t0, 55_000));
        l.stop(ms(t0, 65_000), Some(60_000));
        assert_eq!(l.next_entry(id, ms(t0, 65_100)).seq_to, 55, "held: the quiet is not written");
        l.acknowledge(&l.unacked.clone().unwrap(), &applied(55_000));
        assert_eq!(l.close(ms(t0, 66_000)), Duration::from_millis(4_500));
        assert_eq!(l.clock.live_ms(ms(t0, 70_000)), 55_500);
        // A quiet at the stop, but audio within END_QUIET of the close (a
        // silent microphone's packets, late on a loaded agent): charged.
        let (id, l, ex, heard, _) = running_out(7_400, t0, ms(t0, 4_200));
        let mut l = exhaust_one(id, l, 7_400, &ex);
        *heard.lock().unwrap() = Some(ms(t0, 9_600));
        assert_eq!(l.close(ms(t0, 11_000)), Duration::ZERO);
        let e = l.next_entry(id, ms(t0, 11_000));
        assert_eq!((e.seq_to, e.amount), (11, Millis(7_400)), "every second and the remainder");
        // Heard until the end: the cap alone.
        let (_, mut l) = live("1", t0);
        let (heard, _) = heard_and_spoken(&mut l);
        *heard.lock().unwrap() = Some(ms(t0, 64_900));
        l.stop(ms(t0, 65_000), Some(60_000));
        assert_eq!(l.close(ms(t0, 66_000)), Duration::ZERO);
        assert_eq!(l.clock.live_ms(ms(t0, 70_000)), 60_000);
    }

    #[test]
    fn without_a_sign_the_pause_is_now() {
        let t0 = Instant::now();
        let (id, mut l) = live("1", t0);
        heard_at(&mut l); // muted: no last packet
        assert_eq!(l.next_entry(id, ms(t0, 3_000)).seq_to, 3);
        assert_eq!(l.pause_from_last_heard(ms(t0, 3_600), Pause::UserLeft), Duration::ZERO);
        assert_eq!(l.clock.live_ms(ms(t0, 4_000)), 3_600);
    }
}
