//! The per-user lock that serialises one user's decisions that count
//! something before writing it: wrong activation codes, issued session
//! tokens, session opens. Taken in the caller's transaction and held until it
//! ends; the meter's ticks do not take it (they lock cards).

use crate::error::Result;
use crate::ids::UserId;

/// Locks `user`'s row (`FOR NO KEY UPDATE`: it does not block the key-share
/// locks that inserts referencing the user take) and returns whether the user
/// is active, `None` when there is no such user.
pub(crate) async fn lock_user(conn: &mut sqlx::PgConnection, user: UserId) -> Result<Option<bool>> {
    let row: Option<Option<bool>> =
        sqlx::query_scalar!("SELECT is_active FROM users WHERE id = $1 FOR NO KEY UPDATE", user.0)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|active| active != Some(false)))
}
