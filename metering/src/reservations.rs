//! Places held by issued session tokens. A token the API signs lets its
//! holder create a room and take a worker slot before any second is metered;
//! so every token is a reservation (user, room, persona, expiry = the token's
//! TTL) that counts toward the user's open sessions until the worker opens
//! the session in that room (the reservation is consumed in the same
//! transaction) or refuses it, or the token expires.
//!
//! Two parallel requests cannot both take the last place: a reservation is
//! made under the per-user lock (`users`), after counting under it. Expiry
//! is set and judged by the database's clock, like every time compared
//! between API nodes and workers. Nothing here charges anything.

use std::time::Duration;

use sqlx::PgPool;

use crate::error::{Error, Result};
use crate::ids::UserId;
use crate::users::lock_user;

/// What a token request asks to hold.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub user: UserId,
    pub room: String,
    pub persona_slug: String,
    /// How long the token is valid (its place is held that long).
    pub ttl: Duration,
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

/// Open sessions and unexpired, unconsumed reservations of `user`:
/// (all of them, those of `persona_slug`).
async fn held(conn: &mut sqlx::PgConnection, user: UserId, persona_slug: &str) -> Result<(i64, i64)> {
    let held = sqlx::query!(
        "SELECT COUNT(*) AS \"open!\", COUNT(*) FILTER (WHERE slug = $2) AS \"same_persona!\" FROM ( \
             SELECT persona_slug AS slug FROM voice_sessions WHERE user_id = $1 AND status = 'active' \
             UNION ALL \
             SELECT persona_slug FROM session_reservations \
              WHERE user_id = $1 AND consumed_at IS NULL AND expires_at > NOW()) AS held",
        user.0,
        persona_slug,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok((held.open, held.same_persona))
}

/// Records `r` if `limits` allow it, in one transaction under the user's
/// lock: [`Error::TooManySessions`] or [`Error::PersonaSessionOpen`]
/// otherwise, and nothing is written.
pub async fn reserve(pool: &PgPool, r: &Reservation, limits: Limits) -> Result<()> {
    let mut tx = pool.begin().await?;
    if lock_user(&mut tx, r.user).await?.is_none() {
        return Err(Error::UserNotFound { user: r.user });
    }
    let (open, same_persona) = held(&mut tx, r.user, &r.persona_slug).await?;
    if open >= i64::from(limits.max_open) {
        return Err(Error::TooManySessions { open, max: limits.max_open });
    }
    if limits.one_per_persona && same_persona > 0 {
        return Err(Error::PersonaSessionOpen { persona: r.persona_slug.clone() });
    }
    sqlx::query!(
        "INSERT INTO session_reservations (user_id, room_name, persona_slug, created_at, expires_at) \
         VALUES ($1, $2, $3, NOW(), NOW() + $4 * INTERVAL '1 millisecond')",
        r.user.0,
        r.room,
        r.persona_slug,
        i64::try_from(r.ttl.as_millis()).unwrap_or(i64::MAX) as f64,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Gives back the place a token held in `room` (the worker refused the
/// session there): it no longer counts toward the user's open sessions.
pub async fn release(pool: &PgPool, user: UserId, room: &str) -> Result<()> {
    sqlx::query!(
        "UPDATE session_reservations SET consumed_at = NOW() \
         WHERE user_id = $1 AND room_name = $2 AND consumed_at IS NULL",
        user.0,
        room,
    )
    .execute(pool)
    .await?;
    Ok(())
}
