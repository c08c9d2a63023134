//! A session's row from open to close: [`Store::open`] (with the reservation
//! its token held), [`Store::close`] and [`Store::close_many`] (the meter's
//! own closes), [`Store::close_room_sessions`] (LiveKit says the room or the
//! participant is gone), [`Store::reap_orphans`] (another worker died), and
//! [`Store::session`] to read one back. Each is one transaction; none
//! charges anything (charging is [`ticks`](super::ticks)' job): a close
//! only rounds what the ticks charged into the seed's minutes.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use super::Store;
use crate::error::{Error, Result};
use crate::ids::SessionId;
use crate::ids::UserId;
use crate::records::VoiceSession;
use crate::session::{EndReason, OpenRules, OpenSession};

/// The longest timeout handed to the database as an interval (about 31
/// years): a larger one means "never" and would overflow the interval type.
const MAX_INTERVAL_MS: i64 = 1_000_000_000_000;

/// How a session closes.
#[derive(Debug, Clone)]
pub struct CloseSession {
    pub session: SessionId,
    pub reason: EndReason,
    pub end_time: DateTime<Utc>,
    /// The agent's talking it was forgiven at leaves (ms, 0 to
    /// `meter::state::FORGIVE_LIMIT`, as the table's CHECK requires).
    pub forgiven_ms: i64,
}

impl Store {
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
            let open = sqlx::query_scalar!(
                r#"SELECT EXISTS (SELECT 1 FROM voice_sessions
                   WHERE user_id = $1 AND status = 'active' AND persona_slug = $2) AS "open!""#,
                s.user as _,
                &s.persona_slug,
            )
            .fetch_one(&mut *tx)
            .await?;
            if open {
                return Err(Error::PersonaSessionOpen { persona: s.persona_slug.clone() });
            }
        }
        let inserted = sqlx::query_scalar!(
            r#"INSERT INTO voice_sessions (user_id, session_id, room_name, start_time, status, agent_type,
                   persona_slug, rate_ms_per_second, heartbeat_at, worker_id, ad_supported)
               VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, NOW(), $8, $9) RETURNING id AS "id: SessionId""#,
            s.user as _,
            &s.session_key,
            &s.room,
            now,
            &s.agent_type,
            &s.persona_slug,
            s.rate.ms_per_second(),
            &s.worker_id,
            s.ad_supported,
        )
        .fetch_one(&mut *tx)
        .await;
        let id = match inserted {
            Ok(id) => id,
            Err(sqlx::Error::Database(d))
                if d.constraint().is_some_and(|c| c.starts_with("voice_sessions_one_active_per_")) =>
            {
                return Err(Error::DuplicateSession { job: s.session_key.clone(), room: s.room.clone() });
            }
            Err(e) => return Err(e.into()),
        };
        sqlx::query!(
            "UPDATE session_reservations SET consumed_at = NOW() \
             WHERE user_id = $1 AND room_name = $2 AND consumed_at IS NULL",
            s.user as _,
            &s.room,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
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
        let found = sqlx::query!(
            r#"SELECT id AS "id: SessionId", COALESCE(status, 'active') AS "status!"
               FROM voice_sessions WHERE id = ANY($1) ORDER BY id FOR UPDATE"#,
            &ids as _,
        )
        .fetch_all(&mut *tx)
        .await?;
        let found: HashMap<SessionId, bool> = found.into_iter().map(|r| (r.id, r.status == "active")).collect();
        let open: Vec<&CloseSession> = closes.iter().filter(|c| found.get(&c.session) == Some(&true)).collect();
        let rows = sqlx::query_as!(
            VoiceSession,
            r#"UPDATE voice_sessions v SET end_time = GREATEST(u.u_end, v.start_time),
                   duration_seconds = LEAST(v.metered_ms / 1000, 2147483647)::int4,
                   cost_minutes = LEAST((v.charged_ms + 59999) / 60000, 2147483647)::int4,
                   status = u.u_status, end_reason = u.u_reason, heartbeat_at = u.u_end
               FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[]) AS u(u_id, u_end, u_status, u_reason)
               WHERE v.id = u.u_id
               RETURNING id AS "id: _", user_id AS "user_id: _", session_id, room_name,
                   COALESCE(start_time, NOW()) AS "start_time!", end_time, duration_seconds, cost_minutes,
                   COALESCE(status, 'active') AS "status!: _", COALESCE(agent_type, 'production') AS "agent_type!",
                   quality_rating"#,
            &open.iter().map(|c| c.session).collect::<Vec<_>>() as _,
            &open.iter().map(|c| c.end_time).collect::<Vec<_>>(),
            &open.iter().map(|c| c.reason.status().as_str()).collect::<Vec<_>>() as &[&str],
            &open.iter().map(|c| c.reason.as_str()).collect::<Vec<_>>() as &[&str],
        )
        .fetch_all(&mut *tx)
        .await?;
        let closed_ids: Vec<SessionId> = rows.iter().map(|r| r.id).collect();
        if !closed_ids.is_empty() {
            record_persona_session(&mut tx, &closed_ids).await?;
        }
        let forgiven: Vec<(uuid::Uuid, i64)> = open
            .iter()
            .filter(|c| c.forgiven_ms > 0 && closed_ids.contains(&c.session))
            .map(|c| (c.session.0, c.forgiven_ms))
            .collect();
        if !forgiven.is_empty() {
            self.count(1);
            let (ids, ms): (Vec<uuid::Uuid>, Vec<i64>) = forgiven.into_iter().unzip();
            sqlx::query(
                "UPDATE voice_sessions v SET forgiven_ms = f.ms \
                 FROM UNNEST($1::uuid[], $2::int8[]) AS f(id, ms) WHERE v.id = f.id",
            )
            .bind(ids)
            .bind(ms)
            .execute(&mut *tx)
            .await?;
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

    /// What the sessions `user` started after `since` were forgiven
    /// together (ms), of the agent's talking at leaves.
    pub async fn forgiven_since(&self, user: UserId, since: DateTime<Utc>) -> Result<i64> {
        self.count(1);
        let ms: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(forgiven_ms), 0)::int8 FROM voice_sessions WHERE user_id = $1 AND start_time > $2",
        )
        .bind(user.0)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(ms)
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
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX).min(MAX_INTERVAL_MS);
        // `$1::int8` as the runtime query bound it: the macro would otherwise
        // have PostgreSQL guess a float for the product with an interval.
        let ids = sqlx::query_scalar!(
            r#"SELECT id AS "id: SessionId" FROM voice_sessions
               WHERE status = 'active' AND COALESCE(heartbeat_at, start_time) < NOW() - $1::int8 * INTERVAL '1 millisecond'
                 AND worker_id IS DISTINCT FROM $2
               ORDER BY id FOR UPDATE SKIP LOCKED"#,
            timeout_ms,
            own_worker,
        )
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
        let ids = sqlx::query_scalar!(
            r#"SELECT id AS "id: SessionId" FROM voice_sessions
               WHERE room_name = $1 AND status = 'active' AND ($2::uuid IS NULL OR user_id = $2)
               ORDER BY id FOR UPDATE"#,
            room,
            user as _,
        )
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
        let closed = sqlx::query_scalar!(
            r#"UPDATE voice_sessions v SET status = $2, end_reason = $3,
                   end_time = GREATEST(COALESCE(v.heartbeat_at, v.start_time), v.start_time),
                   duration_seconds = LEAST(v.metered_ms / 1000, 2147483647)::int4,
                   cost_minutes = LEAST((v.charged_ms + 59999) / 60000, 2147483647)::int4
               WHERE v.id = ANY($1) AND v.status = 'active' RETURNING v.id AS "id: SessionId""#,
            ids as _,
            reason.status().as_str(),
            reason.as_str(),
        )
        .fetch_all(&mut **tx)
        .await?;
        if !closed.is_empty() {
            record_persona_session(tx, &closed).await?;
        }
        Ok(closed)
    }

    /// A session as the seed's interface shows it.
    pub async fn session(&self, id: SessionId) -> Result<VoiceSession> {
        sqlx::query_as!(
            VoiceSession,
            r#"SELECT id AS "id: _", user_id AS "user_id: _", session_id, room_name,
                   COALESCE(start_time, NOW()) AS "start_time!", end_time, duration_seconds, cost_minutes,
                   COALESCE(status, 'active') AS "status!: _", COALESCE(agent_type, 'production') AS "agent_type!",
                   quality_rating
               FROM voice_sessions WHERE id = $1"#,
            id as _,
        )
        .fetch_optional(&self.pool)
        .await?
        .ok_or(Error::SessionNotFound { session: id })
    }
}

/// Writes `persona_sessions` rows for just-closed sessions (duration in whole
/// minutes, rounded up like the cost) and counts a use of each custom persona.
async fn record_persona_session(tx: &mut Transaction<'_, Postgres>, ids: &[SessionId]) -> Result<()> {
    sqlx::query!(
        "INSERT INTO persona_sessions (user_id, persona_slug, session_id, duration_minutes, cost_multiplier, created_at) \
         SELECT user_id, COALESCE(persona_slug, ''), session_id, \
                LEAST((metered_ms + 59999) / 60000, 2147483647)::int4, trim_scale(rate_ms_per_second::numeric / 1000), start_time \
         FROM voice_sessions WHERE id = ANY($1)",
        ids as _,
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query!(
        "UPDATE custom_personas c SET usage_count = COALESCE(c.usage_count, 0) + n.uses \
         FROM (SELECT persona_slug, COUNT(*) AS uses FROM voice_sessions WHERE id = ANY($1) GROUP BY persona_slug) n \
         WHERE c.slug = n.persona_slug",
        ids as _,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
