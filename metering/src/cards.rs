//! Time cards over their life: issued from a pricing tier (pending, with a
//! code), activated by a user, drawn by the meter, expired, refunded; while
//! their payment is disputed, suspended. This module (with the meter's store
//! for balances) is the one place a card's state changes: the API and the
//! Stripe webhook call these functions, never write `time_cards` themselves.
//! Times compared here (expiry, the rate limit's window) are the database's.
//!
//! Activation codes are 20 symbols of Crockford's base-32 alphabet (100 bits
//! from the operating system's CSPRNG via `rand`), shown in five groups of
//! four: no I, L, O or U, so nothing is ambiguous when read aloud, and input
//! is forgiving (case, spaces, dashes, and O/I/L typed for 0/1 are accepted).

use chrono::Duration;
use rand::Rng;
use sqlx::{PgConnection, PgPool};

use crate::error::{Error, Result};
use crate::ids::{CardId, UserId, UNCLAIMED_CARDS_OWNER};
use crate::money::Millis;
use crate::records::{CardStatus, PricingTier, TimeCard};
use mindbot_schema::{query_pricing_tiers, query_time_cards};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const CODE_SYMBOLS: usize = 20;

/// A fresh activation code, e.g. `7K2M-Q9XD-4HTR-B0WE-N5JC`.
pub fn generate_code() -> String {
    let mut rng = rand::rng();
    let symbols: Vec<u8> = (0..CODE_SYMBOLS).map(|_| ALPHABET[rng.random_range(0..32)]).collect();
    group(&symbols)
}

fn group(symbols: &[u8]) -> String {
    symbols.chunks(4).map(|c| std::str::from_utf8(c).expect("ascii")).collect::<Vec<_>>().join("-")
}

/// The canonical form of a code as typed, or `None` if it cannot be one.
pub fn normalize_code(input: &str) -> Option<String> {
    let mut out = Vec::with_capacity(CODE_SYMBOLS);
    for ch in input.chars() {
        let c = match ch.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) {
            return None;
        }
        out.push(c as u8);
    }
    (out.len() == CODE_SYMBOLS).then(|| group(&out))
}

/// Activation settings.
#[derive(Debug, Clone)]
pub struct ActivationPolicy {
    /// How long an activated card stays valid (`None`: no expiry).
    pub validity: Option<Duration>,
    /// Failed attempts allowed per user within `window` before refusing.
    pub max_failures: i64,
    pub window: Duration,
}

impl Default for ActivationPolicy {
    fn default() -> Self {
        ActivationPolicy { validity: Some(Duration::days(365)), max_failures: 5, window: Duration::minutes(15) }
    }
}

/// Active pricing tiers, cheapest first.
pub async fn tiers(pool: &PgPool) -> Result<Vec<PricingTier>> {
    Ok(query_pricing_tiers!("SELECT ", " FROM pricing_tiers WHERE COALESCE(active, TRUE) ORDER BY price_cents, id")
        .fetch_all(pool)
        .await?)
}

/// Issues `count` pending cards from an active tier, in one transaction.
/// `owner` is the buyer when known (a payment), else the unclaimed-cards
/// owner until someone activates the code.
pub async fn issue(
    pool: &PgPool,
    tier_id: &str,
    count: u32,
    owner: Option<UserId>,
    payment_intent: Option<&str>,
) -> Result<Vec<TimeCard>> {
    let mut tx = pool.begin().await?;
    let cards = issue_in(&mut tx, tier_id, count, owner, payment_intent).await?;
    tx.commit().await?;
    Ok(cards)
}

/// [`issue`] inside the caller's transaction, so a payment and its card are
/// written together. A second card for one payment intent fails on the
/// database's unique index.
pub async fn issue_in(
    conn: &mut PgConnection,
    tier_id: &str,
    count: u32,
    owner: Option<UserId>,
    payment_intent: Option<&str>,
) -> Result<Vec<TimeCard>> {
    let tier: PricingTier =
        query_pricing_tiers!("SELECT ", " FROM pricing_tiers WHERE id = $1 AND COALESCE(active, TRUE)", tier_id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| Error::TierNotFound { id: tier_id.to_string() })?;
    let minutes = tier.card_minutes()?;
    let mut cards = Vec::with_capacity(count as usize);
    while cards.len() < count as usize {
        // A code collision (2^-100) just draws again.
        let card: Option<TimeCard> = query_time_cards!(
            "INSERT INTO time_cards (user_id, activation_code, total_minutes, remaining_minutes, status, \
                 stripe_payment_intent_id) VALUES ($1, $2, $3, $3, 'pending', $4) \
             ON CONFLICT (activation_code) DO NOTHING RETURNING ",
            "",
            owner.unwrap_or(UNCLAIMED_CARDS_OWNER).0,
            generate_code(),
            minutes,
            payment_intent,
        )
        .fetch_optional(&mut *conn)
        .await?;
        cards.extend(card);
    }
    Ok(cards)
}

/// An active card of `minutes` for `user`, valid from now and never expiring:
/// a gift (the local demo's top-up), not a sale, so no tier and no payment.
/// The card is new, so its whole time is unspent and the audit's
/// `total - remaining = charges + revoked` holds with both at zero.
pub async fn grant(pool: &PgPool, user: UserId, minutes: i32) -> Result<TimeCard> {
    loop {
        // A code collision (2^-100) just draws again.
        let card: Option<TimeCard> = query_time_cards!(
            "INSERT INTO time_cards (user_id, activation_code, total_minutes, remaining_minutes, status, activated_at) \
             VALUES ($1, $2, $3, $3, 'active', NOW()) ON CONFLICT (activation_code) DO NOTHING RETURNING ",
            "",
            user.0,
            generate_code(),
            minutes,
        )
        .fetch_optional(pool)
        .await?;
        if let Some(card) = card {
            return Ok(card);
        }
    }
}

/// One active, never-expiring card for each of `users`, holding `balance`:
/// a gift like [`grant`], for many users at once (the benchmarks fund their
/// users with it), in one transaction with one statement per draw of codes.
/// The card's total is `balance` rounded up to whole minutes (at least one),
/// as the seed's `total_minutes` are whole: a balance of whole minutes keeps
/// every audit invariant; one with a part of a minute reads as a card whose
/// rest was spent before this database's ledger began, which the audit's
/// `ledger_matches_cards` reports (the hang-up benchmark's five-second
/// balances, in a scratch database). Returns the cards' ids, in `users`'
/// order.
pub async fn grant_each(pool: &PgPool, users: &[UserId], balance: Millis) -> Result<Vec<CardId>> {
    let invalid = || Error::InvalidGrant { balance_ms: balance.0 };
    let (minutes, sub_ms) = balance.to_parts();
    let remaining_minutes = i32::try_from(minutes).ok().filter(|m| *m >= 0).ok_or_else(invalid)?;
    let total_minutes = i32::try_from(balance.whole_minutes_ceil().max(1)).map_err(|_| invalid())?;
    let sub_ms = i32::try_from(sub_ms).map_err(|_| invalid())?;
    let mut ids: Vec<Option<CardId>> = vec![None; users.len()];
    let mut tx = pool.begin().await?;
    loop {
        let wanted: Vec<usize> = (0..users.len()).filter(|i| ids[*i].is_none()).collect();
        if wanted.is_empty() {
            break;
        }
        // A code collision (2^-100) leaves that card out of this draw; the
        // next draw gives it a fresh code.
        let owners: Vec<uuid::Uuid> = wanted.iter().map(|i| users[*i].0).collect();
        let codes: Vec<String> = wanted.iter().map(|_| generate_code()).collect();
        let rows = sqlx::query!(
            "INSERT INTO time_cards (user_id, activation_code, total_minutes, remaining_minutes, remaining_sub_ms, \
                 status, activated_at) \
             SELECT u, c, $3, $4, $5, 'active', NOW() FROM UNNEST($1::uuid[], $2::text[]) AS g(u, c) \
             ON CONFLICT (activation_code) DO NOTHING RETURNING activation_code, id AS \"id: CardId\"",
            &owners,
            &codes,
            total_minutes,
            remaining_minutes,
            sub_ms,
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut made: std::collections::HashMap<String, CardId> =
            rows.into_iter().map(|r| (r.activation_code, r.id)).collect();
        for (i, code) in wanted.into_iter().zip(codes) {
            ids[i] = made.remove(&code);
        }
    }
    tx.commit().await?;
    Ok(ids.into_iter().flatten().collect())
}

/// Activates the card with `code` for `user`: `pending` to `active`, owned
/// by the user, `activated_at` now, `expires_at` from the policy (both by the
/// database's clock). A wrong code, or a card already used, active, expired
/// or refunded, is an error that changes no card; wrong codes count towards
/// the user's rate limit.
///
/// The limit is atomic: the user is locked (`users::lock_user`) before the
/// failures are counted, so parallel attempts of one user queue, and each
/// sees the failures the previous ones recorded. At most `max_failures` wrong
/// codes are ever recorded (and checked) per window, however many arrive at
/// once.
pub async fn activate(pool: &PgPool, code: &str, user: UserId, policy: &ActivationPolicy) -> Result<TimeCard> {
    let mut tx = pool.begin().await?;
    match crate::users::lock_user(&mut tx, user).await? {
        None => return Err(Error::UserNotFound { user }),
        Some(false) => return Err(Error::UserInactive { user }),
        Some(true) => {}
    }
    let failures: i64 = sqlx::query_scalar!(
        "SELECT COUNT(*) AS \"failures!\" FROM card_activation_failures \
         WHERE user_id = $1 AND attempted_at > NOW() - $2 * INTERVAL '1 millisecond'",
        user.0,
        policy.window.num_milliseconds() as f64,
    )
    .fetch_one(&mut *tx)
    .await?;
    if failures >= policy.max_failures {
        return Err(Error::ActivationRateLimited { retry_after_secs: policy.window.num_seconds().max(1) as u64 });
    }
    let normalized = normalize_code(code);
    let card: Option<TimeCard> = match &normalized {
        Some(c) => {
            query_time_cards!("SELECT ", " FROM time_cards WHERE activation_code = $1 FOR UPDATE", c)
                .fetch_optional(&mut *tx)
                .await?
        }
        None => None,
    };
    // A card bought by someone else is as unknown to this user as a typo.
    let card = card.filter(|c| c.user_id == UNCLAIMED_CARDS_OWNER || c.user_id == user);
    let Some(card) = card else {
        sqlx::query!("INSERT INTO card_activation_failures (user_id, attempted_at) VALUES ($1, NOW())", user.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        return Err(Error::BadActivationCode { code: code.to_string() });
    };
    match card.status {
        CardStatus::Pending => {}
        CardStatus::Active if card.user_id == user => {
            return Err(Error::CardAlreadyActive { card: card.id });
        }
        _ => return Err(Error::CodeAlreadyUsed { code: code.to_string() }),
    }
    let card = set_active(&mut tx, card.id, user, policy).await?;
    tx.commit().await?;
    Ok(card)
}

/// Activates a pending card bought by `user` (a Stripe payment), inside the
/// caller's transaction, as [`activate`] would with its code. A card that is
/// not pending, or not the buyer's, is left as it is and returned unchanged.
pub async fn activate_bought_in(
    conn: &mut PgConnection,
    card: CardId,
    user: UserId,
    policy: &ActivationPolicy,
) -> Result<TimeCard> {
    let c = lock(conn, card).await?;
    if c.status != CardStatus::Pending || c.user_id != user {
        return Ok(c);
    }
    set_active(conn, card, user, policy).await
}

/// `pending` to `active` for `user`, with the policy's validity from the
/// database's now.
async fn set_active(
    conn: &mut PgConnection,
    card: CardId,
    user: UserId,
    policy: &ActivationPolicy,
) -> Result<TimeCard> {
    Ok(query_time_cards!(
        "UPDATE time_cards SET user_id = $2, status = 'active', activated_at = NOW(), \
             expires_at = NOW() + $3 * INTERVAL '1 millisecond' \
         WHERE id = $1 RETURNING ",
        "",
        card.0,
        user.0,
        policy.validity.map(|v| v.num_milliseconds() as f64),
    )
    .fetch_one(&mut *conn)
    .await?)
}

async fn lock(conn: &mut PgConnection, card: CardId) -> Result<TimeCard> {
    query_time_cards!("SELECT ", " FROM time_cards WHERE id = $1 FOR UPDATE", card.0)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(Error::CardNotFound { card })
}

/// Marks active cards past `expires_at` as `expired`, by the database's
/// clock (so a worker whose clock runs ahead expires nothing early).
/// Returns how many.
pub async fn expire_due(pool: &PgPool) -> Result<u64> {
    Ok(sqlx::query!("UPDATE time_cards SET status = 'expired' WHERE status = 'active' AND expires_at <= NOW()")
        .execute(pool)
        .await?
        .rows_affected())
}

/// Refunds an unused card: `refunded`, balance zero, its whole time
/// recorded as revoked. A card with any time used, or already used, expired
/// or refunded, is refused and unchanged.
pub async fn refund(pool: &PgPool, card: CardId) -> Result<TimeCard> {
    let mut tx = pool.begin().await?;
    let c = refund_in(&mut tx, card).await?;
    tx.commit().await?;
    Ok(c)
}

/// [`refund`] inside the caller's transaction.
pub async fn refund_in(conn: &mut PgConnection, card: CardId) -> Result<TimeCard> {
    let c = lock(conn, card).await?;
    if !matches!(c.status, CardStatus::Pending | CardStatus::Active) {
        return Err(Error::RefundNotAllowed { card, status: c.status.to_string() });
    }
    let charged: i64 = sqlx::query_scalar!(
        "SELECT COALESCE(SUM(charged_ms), 0)::int8 AS \"charged!\" FROM card_charges WHERE time_card_id = $1",
        card.0,
    )
    .fetch_one(&mut *conn)
    .await?;
    let used = Millis::from_minutes(i64::from(c.total_minutes)).0 - c.balance().0;
    if charged > 0 || used != 0 {
        return Err(Error::RefundPartlyUsed { card, used: Millis(used.max(charged)) });
    }
    revoke_locked(conn, c, Revocation::Refund).await
}

/// Why a card's unused time was taken back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// Its payment was refunded.
    Refund,
    /// Its payment was lost in a dispute (a chargeback).
    DisputeLost,
}

impl Revocation {
    pub fn as_str(self) -> &'static str {
        match self {
            Revocation::Refund => "refund",
            Revocation::DisputeLost => "dispute_lost",
        }
    }
}

/// Takes back what is left of a card whose payment came back, used or not:
/// `refunded`, balance zero, and the balance it had recorded in
/// `card_revocations`, so that for every card `total - remaining` is what
/// sessions were charged plus what was revoked. What was already spoken
/// stays charged. A card that is `used` or `expired` has nothing left to
/// take and is returned unchanged, as is one already refunded. Inside the
/// caller's transaction.
pub async fn revoke_in(conn: &mut PgConnection, card: CardId, why: Revocation) -> Result<TimeCard> {
    let c = lock(conn, card).await?;
    if !matches!(c.status, CardStatus::Pending | CardStatus::Active) {
        return Ok(c);
    }
    revoke_locked(conn, c, why).await
}

async fn revoke_locked(conn: &mut PgConnection, c: TimeCard, why: Revocation) -> Result<TimeCard> {
    sqlx::query!(
        "INSERT INTO card_revocations (time_card_id, revoked_ms, reason) VALUES ($1, $2, $3)",
        c.id.0,
        c.balance().0,
        why.as_str(),
    )
    .execute(&mut *conn)
    .await?;
    Ok(query_time_cards!(
        "UPDATE time_cards SET status = 'refunded', remaining_minutes = 0, remaining_sub_ms = 0, suspended_at = NULL \
         WHERE id = $1 RETURNING ",
        "",
        c.id.0,
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// Suspends a card whose payment is disputed: it keeps its status and
/// balance but pays for nothing (the meter, balances and authorisation skip
/// it) until [`reinstate_in`]. Only a pending or active card is suspended;
/// others are returned unchanged. Inside the caller's transaction.
pub async fn suspend_in(conn: &mut PgConnection, card: CardId) -> Result<TimeCard> {
    let c = lock(conn, card).await?;
    if !matches!(c.status, CardStatus::Pending | CardStatus::Active) || c.suspended {
        return Ok(c);
    }
    Ok(query_time_cards!("UPDATE time_cards SET suspended_at = NOW() WHERE id = $1 RETURNING ", "", card.0)
        .fetch_one(&mut *conn)
        .await?)
}

/// Lifts a suspension (a dispute won): the card pays again. A card not
/// suspended is returned unchanged.
pub async fn reinstate_in(conn: &mut PgConnection, card: CardId) -> Result<TimeCard> {
    let c = lock(conn, card).await?;
    if !c.suspended {
        return Ok(c);
    }
    Ok(query_time_cards!("UPDATE time_cards SET suspended_at = NULL WHERE id = $1 RETURNING ", "", card.0)
        .fetch_one(&mut *conn)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_grouped_unambiguous_and_normalize_to_themselves() {
        let c = generate_code();
        assert_eq!(c.len(), 24);
        assert!(!c.contains(['I', 'L', 'O', 'U']));
        assert_eq!(normalize_code(&c).as_deref(), Some(c.as_str()));
        assert_eq!(normalize_code(&c.to_lowercase().replace('-', " ")).as_deref(), Some(c.as_str()));
    }

    #[test]
    fn typed_lookalikes_are_forgiven_and_junk_refused() {
        assert_eq!(normalize_code("oooo-iiii-llll-0000-1111").as_deref(), Some("0000-1111-1111-0000-1111"));
        assert_eq!(normalize_code("ABCD"), None);
        assert_eq!(normalize_code("UUUU-UUUU-UUUU-UUUU-UUUU"), None);
        assert_eq!(normalize_code("ÄBCD-EFGH-JKMN-PQRS-TVWX"), None);
    }

    #[test]
    fn codes_do_not_repeat() {
        let set: std::collections::HashSet<String> = (0..10_000).map(|_| generate_code()).collect();
        assert_eq!(set.len(), 10_000);
    }
}
