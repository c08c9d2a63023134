//! What a user holds and what it buys: exact balances across cards, and the
//! authorisation a session needs before it starts.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::error::{Error, Result};
use crate::ids::UserId;
use crate::ledger::Funds;
use crate::money::{Millis, Rate};
use crate::records::{CardStatus, TimeCard};
use mindbot_schema::query_time_cards;

/// A user's cards and what they can spend now.
#[derive(Debug, Clone)]
pub struct Balance {
    pub user: UserId,
    /// The database's time the balance was read at (expiry is judged by it).
    pub at: DateTime<Utc>,
    /// Every card of the user, drawable ones first in paying order.
    pub cards: Vec<TimeCard>,
    /// The exact sum of the drawable cards (active, not past expiry), paid
    /// and earned.
    pub spendable: Millis,
    /// `spendable` by kind: earned (rewarded-ad) time pays only on
    /// ad-supported personas.
    pub funds: Funds,
}

impl Balance {
    /// Whole seconds the balance pays for at `rate` on a persona that is
    /// (or is not) ad-supported.
    pub fn seconds_for(&self, rate: Rate, ad_supported: bool) -> i64 {
        rate.whole_seconds_in(self.funds.for_session(ad_supported))
    }

    /// Whole seconds the balance pays for at `rate`.
    pub fn seconds_at(&self, rate: Rate) -> i64 {
        rate.whole_seconds_in(self.spendable)
    }
}

/// Whether a card can pay at `now`: active, not suspended, not past its
/// expiry, with a balance.
pub fn drawable(card: &TimeCard, now: DateTime<Utc>) -> bool {
    card.status == CardStatus::Active
        && !card.suspended
        && card.expires_at.is_none_or(|e| e > now)
        && card.balance().is_positive()
}

/// The user's balance now, by the database's clock (a worker whose clock
/// runs ahead does not see cards expire early). Fails if the user does not
/// exist.
pub async fn balance(pool: &PgPool, user: UserId) -> Result<Balance> {
    let now: Option<DateTime<Utc>> =
        sqlx::query_scalar!("SELECT NOW() AS \"now!\" FROM users WHERE id = $1", user.0).fetch_optional(pool).await?;
    let Some(now) = now else {
        return Err(Error::UserNotFound { user });
    };
    let mut cards: Vec<TimeCard> = query_time_cards!(
        "SELECT ",
        " FROM time_cards WHERE user_id = $1 ORDER BY expires_at ASC NULLS LAST, created_at ASC, id ASC",
        user.0,
    )
    .fetch_all(pool)
    .await?;
    cards.sort_by_key(|c| !drawable(c, now));
    let sum = |earned: bool| {
        Millis(cards.iter().filter(|c| drawable(c, now) && c.earned == earned).map(|c| c.balance().0).sum())
    };
    let funds = Funds { paid: sum(false), earned: sum(true) };
    let spendable = Millis(funds.paid.0 + funds.earned.0);
    Ok(Balance { user, at: now, cards, spendable, funds })
}

/// What a session may start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authorization {
    /// What the session may spend (earned time only on an ad-supported persona).
    pub spendable: Millis,
    /// The user's funds by kind.
    pub funds: Funds,
    /// Whole seconds affordable at the session's rate (at least one).
    pub seconds: i64,
}

/// Authorises a session for an active user at `rate` on a persona that is
/// not ad-supported (paid cards only): see [`authorize_for`].
pub async fn authorize(pool: &PgPool, user: UserId, rate: Rate) -> Result<Authorization> {
    authorize_for(pool, user, rate, false).await
}

/// Authorises a session for an active user at `rate`: fails with
/// [`Error::InsufficientBalance`] when what the session may spend (paid
/// cards, plus earned ones when `ad_supported`) buys less than one second.
pub async fn authorize_for(pool: &PgPool, user: UserId, rate: Rate, ad_supported: bool) -> Result<Authorization> {
    let active: Option<Option<bool>> =
        sqlx::query_scalar!("SELECT is_active FROM users WHERE id = $1", user.0).fetch_optional(pool).await?;
    match active {
        None => return Err(Error::UserNotFound { user }),
        Some(Some(false)) => return Err(Error::UserInactive { user }),
        Some(_) => {}
    }
    let b = balance(pool, user).await?;
    let spendable = b.funds.for_session(ad_supported);
    let seconds = rate.whole_seconds_in(spendable);
    if seconds < 1 {
        return Err(Error::InsufficientBalance { available: spendable, multiplier: rate.decimal_text() });
    }
    Ok(Authorization { spendable, funds: b.funds, seconds })
}
