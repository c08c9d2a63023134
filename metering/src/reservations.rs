//! Places held by issued session tokens. A token the API signs lets its
//! holder create a room and take a worker slot before any second is metered;
//! so every token is a reservation (user, room, persona, expiry = the token's
//! TTL) that counts toward the user's open sessions until the worker opens
//! the session in that room (the reservation is consumed in the same
//! transaction) or refuses it, or the token expires.
//!
//! Two parallel requests cannot both take the last place: a reservation is
//! made under a per-user transaction lock, after counting under that lock.
//! Nothing here charges anything.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::error::{Error, Result};
use crate::ids::UserId;

/// What a token request asks to hold.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub user: UserId,
    pub room: String,
    pub persona_slug: String,
    /// When the token expires.
    pub expires_at: DateTime<Utc>,
}

/// Rules a reservation must keep.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Active sessions plus unexpired reservations a user may hold.
    pub max_open: u32,
    /// The persona has a daily limit: at most one open session or
    /// reservation of it per user, so parallel sessions cannot each spend
    /// the whole of today's allowance.
    pub one_per_persona: bool,
}

/// Takes the per-user lock that serialises reservations and opens of one user.
pub(crate) async fn lock_user(tx: &mut sqlx::PgConnection, user: UserId) -> Result<()> {
    // Two int4 keys: a namespace for this lock, and the user id's hash.
    sqlx::query("SELECT pg_advisory_xact_lock(1101, hashtext($1::text))").bind(user).execute(&mut *tx).await?;
    Ok(())
}

/// Open sessions and unexpired, unconsumed reservations of `user` at `now`:
/// (all of them, those of `persona_slug`).
pub(crate) async fn held(
    conn: &mut sqlx::PgConnection,
    user: UserId,
    persona_slug: &str,
    now: DateTime<Utc>,
) -> Result<(i64, i64)> {
    let held: (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE slug = $2) FROM ( \
             SELECT persona_slug AS slug FROM voice_sessions WHERE user_id = $1 AND status = 'active' \
             UNION ALL \
             SELECT persona_slug FROM session_reservations \
              WHERE user_id = $1 AND consumed_at IS NULL AND expires_at > $3) AS held",
    )
    .bind(user)
    .bind(persona_slug)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    Ok(held)
}

/// Records `r` if `limits` allow it at `now`, in one transaction under the
/// user's lock: [`Error::TooManySessions`] or [`Error::PersonaSessionOpen`]
/// otherwise, and nothing is written.
pub async fn reserve(pool: &PgPool, r: &Reservation, limits: Limits, now: DateTime<Utc>) -> Result<()> {
    let mut tx = pool.begin().await?;
    lock_user(&mut tx, r.user).await?;
    let (open, same_persona) = held(&mut tx, r.user, &r.persona_slug, now).await?;
    if open >= i64::from(limits.max_open) {
        return Err(Error::TooManySessions { open, max: limits.max_open });
    }
    if limits.one_per_persona && same_persona > 0 {
        return Err(Error::PersonaSessionOpen { persona: r.persona_slug.clone() });
    }
    sqlx::query(
        "INSERT INTO session_reservations (user_id, room_name, persona_slug, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(r.user)
    .bind(&r.room)
    .bind(&r.persona_slug)
    .bind(now)
    .bind(r.expires_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Gives back the place a token held in `room` (the worker refused the
/// session there): it no longer counts toward the user's open sessions.
pub async fn release(pool: &PgPool, user: UserId, room: &str, now: DateTime<Utc>) -> Result<()> {
    sqlx::query(
        "UPDATE session_reservations SET consumed_at = $3 \
         WHERE user_id = $1 AND room_name = $2 AND consumed_at IS NULL",
    )
    .bind(user)
    .bind(room)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}
