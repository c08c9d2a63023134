//! The per-second writes: one transaction charges a whole batch of ticks,
//! one entry per live session of a worker, in a constant number of
//! statements however many sessions it carries.
//!
//! A tick batch locks the users' cards (by id, so two workers charging one
//! user's cards queue instead of deadlocking) and allocates under those
//! locks, so neither can take a card below zero. Session rows are read
//! without locking and updated last with a guard on their tick sequence; if
//! a session changed meanwhile (closed by the reaper or a webhook) the whole
//! batch rolls back and is retried. Tables updated every tick keep free space
//! per page and index no column a tick changes, so those updates are HOT.
//!
//! [`Store::apply_ticks`] reads in order: `session_states` (where each
//! session's sequence stands), `decide` (what each entry may do),
//! `lock_wallets` (the users' cards), `allocate` (which card pays what), then
//! the three array writes: `write_cards`, `write_charges`,
//! `advance_sessions`.

use std::collections::HashMap;

use sqlx::{Postgres, Transaction};

use super::Store;
use crate::error::{Error, Result};
use crate::ids::{CardId, SessionId, UserId};
use crate::ledger::{self, CardState, Funds};
use crate::money::Millis;

/// One session's part of a tick batch: ticks `seq_from..=seq_to` (empty when
/// `seq_from > seq_to`, a heartbeat only), asking for `amount` and covering
/// `metered_ms` of live time.
#[derive(Debug, Clone, PartialEq)]
pub struct TickEntry {
    pub session: SessionId,
    pub user: UserId,
    pub seq_from: i64,
    pub seq_to: i64,
    pub amount: Millis,
    pub metered_ms: i64,
    /// The session may draw earned cards (its persona is ad-supported).
    pub earned_ok: bool,
}

/// What became of one entry.
#[derive(Debug, Clone, PartialEq)]
pub enum TickResult {
    /// Charged `applied` (less than asked when the cards ran dry).
    Applied { applied: Millis, short: Millis },
    /// These ticks were applied before (a retry or replay): nothing charged.
    AlreadyApplied,
    /// The session is closed (e.g. reaped): nothing charged.
    Closed,
    /// The ticks do not follow the last applied one: nothing charged.
    OutOfOrder { last: i64 },
}

/// A batch's outcome: per entry, and every touched user's spendable funds
/// (paid and earned) after it.
#[derive(Debug, Clone, Default)]
pub struct TickOutcome {
    pub results: Vec<(SessionId, TickResult)>,
    pub balances: HashMap<UserId, Funds>,
}

/// Each session's state as the batch found it: active or not, and its last
/// applied tick.
type SessionStates = HashMap<SessionId, (bool, i64)>;

/// Each touched user's drawable cards, locked, in the order they pay.
type Wallets = HashMap<UserId, Vec<CardState>>;

/// What [`decide`] made of the entries before any card is touched.
struct Decisions {
    /// Per entry, in batch order; charged entries hold a zero `Applied`
    /// until [`allocate`] fills it in.
    results: Vec<(SessionId, TickResult)>,
    /// Indexes of the entries to charge.
    to_charge: Vec<usize>,
    /// The users whose cards the batch locks, sorted, once each.
    users: Vec<UserId>,
}

/// The ledger rows a batch adds, as parallel arrays for `UNNEST`.
#[derive(Default)]
struct Charges {
    session: Vec<SessionId>,
    card: Vec<CardId>,
    ms: Vec<i64>,
}

impl Store {
    /// Applies a batch of ticks in one transaction. Heartbeats every active
    /// session in the batch; charges the entries that follow their session's
    /// last applied tick; skips replays. Heartbeats, charge times and card
    /// expiry all use the database's clock, never this worker's.
    pub async fn apply_ticks(&self, entries: &[TickEntry]) -> Result<TickOutcome> {
        if entries.is_empty() {
            return Ok(TickOutcome::default());
        }
        let mut tx = self.pool.begin().await?;
        let outcome = self.apply_ticks_in(&mut tx, entries).await?;
        tx.commit().await?;
        self.count(2);
        Ok(outcome)
    }

    async fn apply_ticks_in(&self, tx: &mut Transaction<'_, Postgres>, entries: &[TickEntry]) -> Result<TickOutcome> {
        let states = self.session_states(tx, entries).await?;
        let mut decisions = decide(entries, &states);
        let mut wallets = self.lock_wallets(tx, &decisions.users).await?;
        let charges = allocate(entries, &mut decisions, &mut wallets);
        self.write_cards(tx, &wallets).await?;
        self.write_charges(tx, &charges).await?;
        self.advance_sessions(tx, entries, &decisions).await?;
        let balances = wallets.iter().map(|(u, cards)| (*u, ledger::spendable(cards))).collect();
        Ok(TickOutcome { results: decisions.results, balances })
    }

    /// Reads where each entry's session stands, without locking: the final
    /// session update re-checks each row's sequence under its row lock, and a
    /// mismatch (someone closed a session meanwhile) rolls the whole batch
    /// back to be retried.
    async fn session_states(&self, tx: &mut Transaction<'_, Postgres>, entries: &[TickEntry]) -> Result<SessionStates> {
        let ids: Vec<SessionId> = entries.iter().map(|e| e.session).collect();
        self.count(1);
        let rows = sqlx::query!(
            r#"SELECT id AS "id: SessionId", COALESCE(status, 'active') AS "status!", last_tick_seq
               FROM voice_sessions WHERE id = ANY($1)"#,
            &ids as _,
        )
        .fetch_all(&mut **tx)
        .await?;
        Ok(rows.into_iter().map(|r| (r.id, (r.status == "active", r.last_tick_seq))).collect())
    }

    /// Locks the users' drawable cards, in id order, and orders each user's
    /// by who pays first (expiry judged by the database's clock). A
    /// suspended card (its payment disputed) pays nothing.
    async fn lock_wallets(&self, tx: &mut Transaction<'_, Postgres>, users: &[UserId]) -> Result<Wallets> {
        self.count(1);
        let rows = sqlx::query!(
            r#"SELECT id AS "id: CardId", user_id AS "user_id: UserId", remaining_minutes, remaining_sub_ms,
                      expires_at, COALESCE(created_at, NOW()) AS "created_at!", NOW() AS "now!",
                      kind = 'earned' AS "earned!"
               FROM time_cards WHERE user_id = ANY($1) AND status = 'active' AND suspended_at IS NULL
               ORDER BY id FOR UPDATE"#,
            users as _,
        )
        .fetch_all(&mut **tx)
        .await?;
        let mut wallets: Wallets = HashMap::new();
        let mut db_now = None;
        for r in rows {
            db_now = Some(r.now);
            let balance = Millis::from_parts(r.remaining_minutes, r.remaining_sub_ms);
            wallets
                .entry(r.user_id)
                .or_default()
                .push(CardState::new(r.id, balance, r.expires_at, r.created_at).earned(r.earned));
        }
        if let Some(now) = db_now {
            for cards in wallets.values_mut() {
                ledger::order_cards(cards, now);
            }
        }
        Ok(wallets)
    }

    /// Writes the cards the allocation changed: balance and status.
    async fn write_cards(&self, tx: &mut Transaction<'_, Postgres>, wallets: &Wallets) -> Result<()> {
        let mut c_id = Vec::new();
        let mut c_min = Vec::new();
        let mut c_sub = Vec::new();
        let mut c_status = Vec::new();
        for card in wallets.values().flatten().filter(|c| c.touched) {
            let (m, s) = card.balance.to_parts();
            c_id.push(card.id);
            c_min.push(m as i32);
            c_sub.push(s as i32);
            c_status.push(if card.expired {
                "expired"
            } else if card.used_up {
                "used"
            } else {
                "active"
            });
        }
        if c_id.is_empty() {
            return Ok(());
        }
        self.count(1);
        sqlx::query!(
            "UPDATE time_cards AS c SET remaining_minutes = u.m, remaining_sub_ms = u.s, status = u.st \
             FROM UNNEST($1::uuid[], $2::int4[], $3::int4[], $4::text[]) AS u(id, m, s, st) WHERE c.id = u.id",
            &c_id as _,
            &c_min,
            &c_sub,
            &c_status as &[&str],
        )
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Adds what each session took from each card to the ledger.
    async fn write_charges(&self, tx: &mut Transaction<'_, Postgres>, charges: &Charges) -> Result<()> {
        if charges.session.is_empty() {
            return Ok(());
        }
        self.count(1);
        sqlx::query!(
            "INSERT INTO card_charges (voice_session_id, time_card_id, charged_ms, first_charged_at, last_charged_at) \
             SELECT s, c, m, NOW(), NOW() FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[]) AS u(s, c, m) \
             ON CONFLICT (voice_session_id, time_card_id) DO UPDATE \
             SET charged_ms = card_charges.charged_ms + EXCLUDED.charged_ms, last_charged_at = EXCLUDED.last_charged_at",
            &charges.session as _,
            &charges.card as _,
            &charges.ms,
        )
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Advances the sessions: a heartbeat for every active one, sequence and
    /// totals for the charged ones, each guarded by the sequence it was read
    /// at. A row that moved meanwhile fails the batch with
    /// [`Error::ConcurrentChange`].
    async fn advance_sessions(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        entries: &[TickEntry],
        decisions: &Decisions,
    ) -> Result<()> {
        let results = &decisions.results;
        let mut charged_flag = vec![false; entries.len()];
        for &i in &decisions.to_charge {
            charged_flag[i] = true;
        }
        let mut s_id = Vec::new();
        let mut s_prev = Vec::new();
        let mut s_seq = Vec::new();
        let mut s_charged = Vec::new();
        let mut s_metered = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if matches!(results[i].1, TickResult::Closed) {
                continue;
            }
            let charged = charged_flag[i];
            let applied = match results[i].1 {
                TickResult::Applied { applied, .. } if charged => applied.0,
                _ => 0,
            };
            s_id.push(e.session);
            s_prev.push(if charged { Some(e.seq_from - 1) } else { None });
            s_seq.push(if charged { Some(e.seq_to) } else { None });
            s_charged.push(applied);
            s_metered.push(if charged { e.metered_ms } else { 0 });
        }
        if s_id.is_empty() {
            return Ok(());
        }
        self.count(1);
        let updated = sqlx::query!(
            "UPDATE voice_sessions AS v SET heartbeat_at = NOW(), \
                 last_tick_seq = COALESCE(u.seq, v.last_tick_seq), \
                 charged_ms = v.charged_ms + u.charged, metered_ms = v.metered_ms + u.metered \
             FROM UNNEST($1::uuid[], $2::int8[], $3::int8[], $4::int8[], $5::int8[]) \
                 AS u(id, prev, seq, charged, metered) \
             WHERE v.id = u.id AND v.status = 'active' AND (u.prev IS NULL OR v.last_tick_seq = u.prev)",
            &s_id as _,
            &s_prev as &[Option<i64>],
            &s_seq as &[Option<i64>],
            &s_charged,
            &s_metered,
        )
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if updated != s_id.len() as u64 {
            return Err(Error::ConcurrentChange);
        }
        Ok(())
    }
}

/// Decides per entry, before touching cards: a closed session gets nothing,
/// a heartbeat-only entry or one that follows the last applied tick goes on,
/// a replay or a gap is skipped.
fn decide(entries: &[TickEntry], states: &SessionStates) -> Decisions {
    let mut results = Vec::with_capacity(entries.len());
    let mut to_charge = Vec::new();
    let mut users: Vec<UserId> = Vec::new();
    for e in entries {
        let r = match states.get(&e.session) {
            None | Some((false, _)) => TickResult::Closed,
            Some(&(true, _)) if e.seq_from > e.seq_to => {
                users.push(e.user);
                TickResult::Applied { applied: Millis::ZERO, short: Millis::ZERO }
            }
            Some(&(true, last)) if last >= e.seq_to => TickResult::AlreadyApplied,
            Some(&(true, last)) if last != e.seq_from - 1 => TickResult::OutOfOrder { last },
            Some(_) => {
                users.push(e.user);
                to_charge.push(results.len());
                TickResult::Applied { applied: Millis::ZERO, short: Millis::ZERO }
            }
        };
        results.push((e.session, r));
    }
    users.sort();
    users.dedup();
    Decisions { results, to_charge, users }
}

/// Draws each charged entry's amount from its user's cards, in batch order,
/// recording what was applied and what fell short.
fn allocate(entries: &[TickEntry], decisions: &mut Decisions, wallets: &mut Wallets) -> Charges {
    let mut charges = Charges::default();
    for &i in &decisions.to_charge {
        let e = &entries[i];
        let cards = wallets.entry(e.user).or_default();
        let taken = ledger::draw(cards, e.amount, e.earned_ok);
        let applied: i64 = taken.iter().map(|(_, m)| m.0).sum();
        for (card, m) in taken {
            charges.session.push(e.session);
            charges.card.push(card);
            charges.ms.push(m.0);
        }
        decisions.results[i].1 = TickResult::Applied { applied: Millis(applied), short: Millis(e.amount.0 - applied) };
    }
    charges
}
