//! The SQL behind the meter. Every state change is one transaction; a tick
//! batch for all of a worker's live sessions is a constant number of
//! statements (sessions locked, cards locked, three array writes), however
//! many sessions it carries.
//!
//! A tick batch locks the users' cards (by id, so two workers charging one
//! user's cards queue instead of deadlocking) and allocates under those
//! locks, so neither can take a card below zero. Session rows are read
//! without locking and updated last with a guard on their tick sequence; if
//! a session changed meanwhile (closed by the reaper or a webhook) the whole
//! batch rolls back and is retried. Tables updated every tick keep free space
//! per page and index no column a tick changes, so those updates are HOT.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use crate::error::{Error, Result};
use crate::ids::{CardId, SessionId, UserId};
use crate::ledger::{self, CardState, Funds};
use crate::money::{Millis, Rate};
use crate::records::{SessionStatus, VoiceSession, VOICE_SESSION_COLUMNS};

/// The longest timeout handed to the database as an interval (about 31
/// years): a larger one means "never" and would overflow the interval type.
const MAX_INTERVAL_MS: i64 = 1_000_000_000_000;

/// Why a session ended. Maps onto the seed's `status` and our `end_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    UserLeft,
    BalanceExhausted,
    TimeLimit,
    DailyLimit,
    Shutdown,
    RoomClosed,
    AgentRemoved,
    DbUnavailable,
    Orphaned,
    Error,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::UserLeft => "user_left",
            EndReason::BalanceExhausted => "balance_exhausted",
            EndReason::TimeLimit => "time_limit",
            EndReason::DailyLimit => "daily_limit",
            EndReason::Shutdown => "shutdown",
            EndReason::RoomClosed => "room_closed",
            EndReason::AgentRemoved => "agent_removed",
            EndReason::DbUnavailable => "db_unavailable",
            EndReason::Orphaned => "orphaned",
            EndReason::Error => "error",
        }
    }

    /// The seed status a session ending this way gets: an ending the product
    /// meant is `completed`; a failure of ours is `error`.
    pub fn status(self) -> SessionStatus {
        match self {
            EndReason::DbUnavailable | EndReason::Orphaned | EndReason::Error => SessionStatus::Error,
            _ => SessionStatus::Completed,
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a caller opens a metered session with.
#[derive(Debug, Clone)]
pub struct OpenSession {
    pub user: UserId,
    /// The seed's textual `session_id` (e.g. the LiveKit job id).
    pub session_key: String,
    pub room: String,
    pub persona_slug: String,
    pub rate: Rate,
    pub agent_type: String,
    pub worker_id: String,
    /// The persona is ad-supported: earned (rewarded-ad) cards pay first.
    pub ad_supported: bool,
}

/// Rules an open must keep beyond one active session per job and per (room, user).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenRules {
    /// The persona has a daily limit: one active session of it per user, so
    /// parallel sessions cannot each spend the whole of today's allowance.
    pub one_per_persona: bool,
}

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

/// How a session closes.
#[derive(Debug, Clone)]
pub struct CloseSession {
    pub session: SessionId,
    pub reason: EndReason,
    pub end_time: DateTime<Utc>,
}

/// A locked card as the tick reads it: id, owner, minutes, sub-minute ms,
/// expiry, creation, the database's now (expiry is judged by it), and
/// whether it is earned.
type CardRow = (CardId, UserId, i32, i32, Option<DateTime<Utc>>, DateTime<Utc>, DateTime<Utc>, bool);

/// The database side of metering, with a count of statements sent (for the
/// benchmark's statements per second).
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    statements: Arc<AtomicU64>,
}

impl Store {
    pub fn new(pool: PgPool) -> Store {
        Store { pool, statements: Arc::new(AtomicU64::new(0)) }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Statements sent so far by tick batches, opens and closes.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    fn count(&self, n: u64) {
        self.statements.fetch_add(n, Ordering::Relaxed);
    }

    /// Opens a voice session (status `active`, started at `now`, heartbeat at
    /// the database's now like every heartbeat) and consumes the reservation
    /// its token held for the room, in one transaction. Refused with
    /// [`Error::DuplicateSession`] while a session is active for the same job
    /// or the same (room, user).
    pub async fn open(&self, s: &OpenSession, now: DateTime<Utc>) -> Result<SessionId> {
        self.open_with(s, OpenRules::default(), now).await
    }

    /// [`open`](Self::open) under `rules`: with `one_per_persona`, refused
    /// with [`Error::PersonaSessionOpen`] while the user has an active
    /// session of the same persona (checked under the user's lock).
    pub async fn open_with(&self, s: &OpenSession, rules: OpenRules, now: DateTime<Utc>) -> Result<SessionId> {
        self.count(4);
        let mut tx = self.pool.begin().await?;
        crate::users::lock_user(&mut tx, s.user).await?;
        if rules.one_per_persona {
            let open: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM voice_sessions \
                 WHERE user_id = $1 AND status = 'active' AND persona_slug = $2)",
            )
            .bind(s.user)
            .bind(&s.persona_slug)
            .fetch_one(&mut *tx)
            .await?;
            if open {
                return Err(Error::PersonaSessionOpen { persona: s.persona_slug.clone() });
            }
        }
        let inserted = sqlx::query_scalar(
            "INSERT INTO voice_sessions (user_id, session_id, room_name, start_time, status, agent_type, \
                 persona_slug, rate_ms_per_second, heartbeat_at, worker_id, ad_supported) \
             VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, NOW(), $8, $9) RETURNING id",
        )
        .bind(s.user)
        .bind(&s.session_key)
        .bind(&s.room)
        .bind(now)
        .bind(&s.agent_type)
        .bind(&s.persona_slug)
        .bind(s.rate.ms_per_second())
        .bind(&s.worker_id)
        .bind(s.ad_supported)
        .fetch_one(&mut *tx)
        .await;
        let id: SessionId = match inserted {
            Ok(id) => id,
            Err(sqlx::Error::Database(d))
                if d.constraint().is_some_and(|c| c.starts_with("voice_sessions_one_active_per_")) =>
            {
                return Err(Error::DuplicateSession { job: s.session_key.clone(), room: s.room.clone() });
            }
            Err(e) => return Err(e.into()),
        };
        sqlx::query(
            "UPDATE session_reservations SET consumed_at = NOW() \
             WHERE user_id = $1 AND room_name = $2 AND consumed_at IS NULL",
        )
        .bind(s.user)
        .bind(&s.room)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

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
        let ids: Vec<SessionId> = entries.iter().map(|e| e.session).collect();
        self.count(1);
        // Read without locking: the final session update re-checks each
        // row's sequence under its row lock, and a mismatch (someone closed
        // a session meanwhile) rolls the whole batch back to be retried.
        let rows: Vec<(SessionId, String, i64)> = sqlx::query_as(
            "SELECT id, COALESCE(status, 'active'), last_tick_seq FROM voice_sessions WHERE id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await?;
        let state: HashMap<SessionId, (bool, i64)> =
            rows.into_iter().map(|(id, status, last)| (id, (status == "active", last))).collect();

        // Decide per entry, before touching cards.
        let mut results = Vec::with_capacity(entries.len());
        let mut to_charge = Vec::new();
        let mut users: Vec<UserId> = Vec::new();
        for e in entries {
            let r = match state.get(&e.session) {
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

        // Lock the users' drawable cards, in id order. A suspended card (its
        // payment disputed) pays nothing.
        self.count(1);
        let card_rows: Vec<CardRow> = sqlx::query_as(
            "SELECT id, user_id, remaining_minutes, remaining_sub_ms, expires_at, COALESCE(created_at, NOW()), NOW(), \
                    kind = 'earned' \
             FROM time_cards WHERE user_id = ANY($1) AND status = 'active' AND suspended_at IS NULL \
             ORDER BY id FOR UPDATE",
        )
        .bind(&users)
        .fetch_all(&mut **tx)
        .await?;
        let mut wallets: HashMap<UserId, Vec<CardState>> = HashMap::new();
        let mut db_now = None;
        for (id, user, minutes, sub, expires, created, now, earned) in card_rows {
            db_now = Some(now);
            wallets
                .entry(user)
                .or_default()
                .push(CardState::new(id, Millis::from_parts(minutes, sub), expires, created).earned(earned));
        }
        if let Some(now) = db_now {
            for cards in wallets.values_mut() {
                ledger::order_cards(cards, now);
            }
        }

        // Allocate, in batch order.
        let mut charge_session = Vec::new();
        let mut charge_card = Vec::new();
        let mut charge_ms = Vec::new();
        for &i in &to_charge {
            let e = &entries[i];
            let cards = wallets.entry(e.user).or_default();
            let taken = ledger::draw(cards, e.amount, e.earned_ok);
            let applied: i64 = taken.iter().map(|(_, m)| m.0).sum();
            for (card, m) in taken {
                charge_session.push(e.session);
                charge_card.push(card);
                charge_ms.push(m.0);
            }
            results[i].1 = TickResult::Applied { applied: Millis(applied), short: Millis(e.amount.0 - applied) };
        }

        // Write cards that changed.
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
        if !c_id.is_empty() {
            self.count(1);
            sqlx::query(
                "UPDATE time_cards AS c SET remaining_minutes = u.m, remaining_sub_ms = u.s, status = u.st \
                 FROM UNNEST($1::uuid[], $2::int4[], $3::int4[], $4::text[]) AS u(id, m, s, st) WHERE c.id = u.id",
            )
            .bind(&c_id)
            .bind(&c_min)
            .bind(&c_sub)
            .bind(&c_status)
            .execute(&mut **tx)
            .await?;
        }
        if !charge_session.is_empty() {
            self.count(1);
            sqlx::query(
                "INSERT INTO card_charges (voice_session_id, time_card_id, charged_ms, first_charged_at, last_charged_at) \
                 SELECT s, c, m, NOW(), NOW() FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[]) AS u(s, c, m) \
                 ON CONFLICT (voice_session_id, time_card_id) DO UPDATE \
                 SET charged_ms = card_charges.charged_ms + EXCLUDED.charged_ms, last_charged_at = EXCLUDED.last_charged_at",
            )
            .bind(&charge_session)
            .bind(&charge_card)
            .bind(&charge_ms)
            .execute(&mut **tx)
            .await?;
        }

        // Advance sessions: heartbeat for every active one, sequence and
        // totals for the charged ones.
        let mut charged_flag = vec![false; entries.len()];
        for &i in &to_charge {
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
        if !s_id.is_empty() {
            self.count(1);
            let updated = sqlx::query(
                "UPDATE voice_sessions AS v SET heartbeat_at = NOW(), \
                     last_tick_seq = COALESCE(u.seq, v.last_tick_seq), \
                     charged_ms = v.charged_ms + u.charged, metered_ms = v.metered_ms + u.metered \
                 FROM UNNEST($1::uuid[], $2::int8[], $3::int8[], $4::int8[], $5::int8[]) \
                     AS u(id, prev, seq, charged, metered) \
                 WHERE v.id = u.id AND v.status = 'active' AND (u.prev IS NULL OR v.last_tick_seq = u.prev)",
            )
            .bind(&s_id)
            .bind(&s_prev)
            .bind(&s_seq)
            .bind(&s_charged)
            .bind(&s_metered)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if updated != s_id.len() as u64 {
                return Err(Error::ConcurrentChange);
            }
        }

        let balances = wallets.iter().map(|(u, cards)| (*u, ledger::spendable(cards))).collect();
        Ok(TickOutcome { results, balances })
    }

    /// Closes a session: end time, duration (whole seconds of metered live
    /// time), cost in whole minutes (the exact charge rounded up), status and
    /// reason; writes its `persona_sessions` row and counts a use of a custom
    /// persona. One transaction. Closing a closed session is an error and
    /// changes nothing.
    pub async fn close(&self, c: &CloseSession) -> Result<VoiceSession> {
        let mut out = self.close_many(std::slice::from_ref(c)).await?;
        out.pop().map(|(_, r)| r).unwrap_or(Err(Error::SessionNotFound { session: c.session }))
    }

    /// Closes several sessions in one transaction (each as [`close`](Self::close)
    /// would); a session already closed or unknown gets its error and the
    /// others still close.
    pub async fn close_many(&self, closes: &[CloseSession]) -> Result<Vec<(SessionId, Result<VoiceSession>)>> {
        let mut tx = self.pool.begin().await?;
        self.count(6);
        let ids: Vec<SessionId> = closes.iter().map(|c| c.session).collect();
        let found: Vec<(SessionId, String)> = sqlx::query_as(
            "SELECT id, COALESCE(status, 'active') FROM voice_sessions WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let found: HashMap<SessionId, bool> = found.into_iter().map(|(id, s)| (id, s == "active")).collect();
        let open: Vec<&CloseSession> = closes.iter().filter(|c| found.get(&c.session) == Some(&true)).collect();
        let rows: Vec<VoiceSession> = sqlx::query_as(&format!(
            "UPDATE voice_sessions v SET end_time = GREATEST(u.u_end, v.start_time), \
                 duration_seconds = LEAST(v.metered_ms / 1000, 2147483647)::int4, \
                 cost_minutes = LEAST((v.charged_ms + 59999) / 60000, 2147483647)::int4, \
                 status = u.u_status, end_reason = u.u_reason, heartbeat_at = u.u_end \
             FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[]) AS u(u_id, u_end, u_status, u_reason) \
             WHERE v.id = u.u_id RETURNING {VOICE_SESSION_COLUMNS}"
        ))
        .bind(open.iter().map(|c| c.session).collect::<Vec<_>>())
        .bind(open.iter().map(|c| c.end_time).collect::<Vec<_>>())
        .bind(open.iter().map(|c| c.reason.status().as_str()).collect::<Vec<_>>())
        .bind(open.iter().map(|c| c.reason.as_str()).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
        let closed_ids: Vec<SessionId> = rows.iter().map(|r| r.id).collect();
        if !closed_ids.is_empty() {
            record_persona_session(&mut tx, &closed_ids).await?;
        }
        tx.commit().await?;
        let mut by_id: HashMap<SessionId, VoiceSession> = rows.into_iter().map(|r| (r.id, r)).collect();
        Ok(closes
            .iter()
            .map(|c| {
                let r = match (by_id.remove(&c.session), found.get(&c.session)) {
                    (Some(row), _) => Ok(row),
                    (None, Some(_)) => Err(Error::SessionClosed { session: c.session }),
                    (None, None) => Err(Error::SessionNotFound { session: c.session }),
                };
                (c.session, r)
            })
            .collect())
    }

    /// Closes every active session whose heartbeat is older than `timeout`
    /// by the database's clock (its worker died): status `error`, reason
    /// `orphaned`, end time at its last heartbeat, and exactly what its
    /// applied ticks charged. Heartbeats are written with the database's
    /// clock too, so a worker whose own clock runs ahead reaps nothing early.
    /// Sessions of `own_worker` are skipped: a live worker still holds their
    /// charges (for example through a database outage) and writes them
    /// itself. Returns the sessions closed. Safe to run from every worker at
    /// once.
    pub async fn reap_orphans(&self, timeout: std::time::Duration, own_worker: &str) -> Result<Vec<SessionId>> {
        let mut tx = self.pool.begin().await?;
        self.count(1);
        let ids: Vec<SessionId> = sqlx::query_scalar(
            "SELECT id FROM voice_sessions \
             WHERE status = 'active' AND COALESCE(heartbeat_at, start_time) < NOW() - $1 * INTERVAL '1 millisecond' \
               AND worker_id IS DISTINCT FROM $2 \
             ORDER BY id FOR UPDATE SKIP LOCKED",
        )
        .bind(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX).min(MAX_INTERVAL_MS))
        .bind(own_worker)
        .fetch_all(&mut *tx)
        .await?;
        let closed = self.end_at_heartbeat(&mut tx, &ids, EndReason::Orphaned).await?;
        tx.commit().await?;
        Ok(closed)
    }

    /// Ends the active sessions of `room` (only `user`'s when given) because
    /// LiveKit says the room or the participant is gone, whoever's meter holds
    /// them: one transaction, in the reaper's way. Each ends at its last
    /// heartbeat (the last tick written), charged exactly what its applied
    /// ticks charged and never more; a meter still holding one sees its next
    /// tick refused as closed and reports it closed elsewhere. Returns the
    /// sessions closed.
    pub async fn close_room_sessions(
        &self,
        room: &str,
        user: Option<UserId>,
        reason: EndReason,
    ) -> Result<Vec<SessionId>> {
        let mut tx = self.pool.begin().await?;
        self.count(1);
        let ids: Vec<SessionId> = sqlx::query_scalar(
            "SELECT id FROM voice_sessions \
             WHERE room_name = $1 AND status = 'active' AND ($2::uuid IS NULL OR user_id = $2) \
             ORDER BY id FOR UPDATE",
        )
        .bind(room)
        .bind(user)
        .fetch_all(&mut *tx)
        .await?;
        let closed = self.end_at_heartbeat(&mut tx, &ids, reason).await?;
        tx.commit().await?;
        Ok(closed)
    }

    /// Ends `ids` (locked by the caller's transaction) with `reason` at their
    /// last heartbeat, with the seed's duration and cost from what their
    /// applied ticks metered and charged, and records their persona sessions.
    /// Nothing is charged here. Returns those that were still active.
    async fn end_at_heartbeat(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        ids: &[SessionId],
        reason: EndReason,
    ) -> Result<Vec<SessionId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.count(2);
        let closed: Vec<SessionId> = sqlx::query_scalar(
            "UPDATE voice_sessions v SET status = $2, end_reason = $3, \
                 end_time = GREATEST(COALESCE(v.heartbeat_at, v.start_time), v.start_time), \
                 duration_seconds = LEAST(v.metered_ms / 1000, 2147483647)::int4, \
                 cost_minutes = LEAST((v.charged_ms + 59999) / 60000, 2147483647)::int4 \
             WHERE v.id = ANY($1) AND v.status = 'active' RETURNING v.id",
        )
        .bind(ids)
        .bind(reason.status().as_str())
        .bind(reason.as_str())
        .fetch_all(&mut **tx)
        .await?;
        if !closed.is_empty() {
            record_persona_session(tx, &closed).await?;
        }
        Ok(closed)
    }

    /// A session as the seed's interface shows it.
    pub async fn session(&self, id: SessionId) -> Result<VoiceSession> {
        sqlx::query_as(&format!("SELECT {VOICE_SESSION_COLUMNS} FROM voice_sessions WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::SessionNotFound { session: id })
    }
}

/// Writes `persona_sessions` rows for just-closed sessions (duration in whole
/// minutes, rounded up like the cost) and counts a use of each custom persona.
async fn record_persona_session(tx: &mut Transaction<'_, Postgres>, ids: &[SessionId]) -> Result<()> {
    sqlx::query(
        "INSERT INTO persona_sessions (user_id, persona_slug, session_id, duration_minutes, cost_multiplier, created_at) \
         SELECT user_id, COALESCE(persona_slug, ''), session_id, \
                LEAST((metered_ms + 59999) / 60000, 2147483647)::int4, trim_scale(rate_ms_per_second::numeric / 1000), start_time \
         FROM voice_sessions WHERE id = ANY($1)",
    )
    .bind(ids)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE custom_personas c SET usage_count = COALESCE(c.usage_count, 0) + n.uses \
         FROM (SELECT persona_slug, COUNT(*) AS uses FROM voice_sessions WHERE id = ANY($1) GROUP BY persona_slug) n \
         WHERE c.slug = n.persona_slug",
    )
    .bind(ids)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
