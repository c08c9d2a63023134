//! `POST /v1/webhooks/stripe`. The `Stripe-Signature` header carries a
//! timestamp `t` and one or more `v1` signatures: HMAC-SHA256, keyed with the
//! endpoint's secret, over `"{t}.{raw body}"`. A timestamp outside the
//! tolerance window or no matching signature is a 400.
//!
//! Each event is handled in one transaction that also records its id, so a
//! replayed event changes nothing; a second payment event for one payment
//! intent finds its `payment_history` row (and the database allows one card
//! per payment intent). Events of one payment intent are serialized by an
//! advisory lock on it.
//!
//! - `payment_intent.succeeded` issues the tier's card to the buyer, if the
//!   amount received and its currency are the tier's price (else the payment
//!   is recorded as `amount_mismatch`, with no card, and answered 200: Stripe
//!   retrying would not change it).
//! - `charge.refunded`, `charge.dispute.created` and `charge.dispute.closed`
//!   are merged into `stripe_payment_outcomes`, so their order (and the
//!   payment's) does not matter, and the payment's card follows: a full
//!   refund or a lost dispute revokes what is left on it, an open dispute
//!   suspends it, a won one reinstates it. A partial refund keeps the card.
//! - `customer.subscription.*` keeps `user_subscriptions` current.
//!
//! Cards change only through the metering crate's functions; nothing here
//! writes `time_cards`.

use aws_lc_rs::{constant_time, hmac};
use axum::Json;
use chrono::{DateTime, Utc};
use metering::UserId;
use serde::Deserialize;
use serde_json::Value;
use sqlx::{PgConnection, Postgres, Transaction};

mod outcomes;

use super::{HmacSigned, Received, Webhook};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::Api;

/// Why a signature header was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// Longer than [`MAX_HEADER_BYTES`], more than [`MAX_SIGNATURES`] `v1`
    /// entries, a `v1` that is not 64 hex digits, or no `t` or `v1` at all.
    Malformed,
    OutsideTolerance,
    Mismatch,
}

/// The longest `Stripe-Signature` header read. Stripe sends one timestamp
/// and a signature per active secret (two while a secret is rolled), about
/// 150 bytes each; anything near this is not from Stripe.
pub const MAX_HEADER_BYTES: usize = 1024;

/// The most `v1` entries read: one per endpoint secret Stripe may sign with.
pub const MAX_SIGNATURES: usize = 8;

/// How Stripe signs its events.
const SIGNED: HmacSigned = HmacSigned {
    source: "stripe",
    header: "stripe-signature",
    refusal: "the Stripe-Signature header does not verify",
    log: "Stripe webhook refused",
};

/// Checks a `Stripe-Signature` header over `body` at `now` (Unix seconds).
/// The header is parsed and bounded before any cryptography: the HMAC over
/// `"{t}.{body}"` is computed once, whatever the header holds, and compared
/// with each (at most [`MAX_SIGNATURES`]) 32-byte `v1` in constant time.
pub fn verify_signature(
    secret: &str,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    if header.len() > MAX_HEADER_BYTES {
        return Err(SignatureError::Malformed);
    }
    let mut timestamp = None;
    let mut signatures: Vec<[u8; 32]> = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => timestamp = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            Some(("v1", v)) => {
                if signatures.len() == MAX_SIGNATURES {
                    return Err(SignatureError::Malformed);
                }
                signatures.push(decode_signature(v).ok_or(SignatureError::Malformed)?);
            }
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now.checked_sub(t).is_none_or(|age| age.abs() > tolerance_secs) {
        return Err(SignatureError::OutsideTolerance);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(format!("{t}.").as_bytes());
    ctx.update(body);
    let expected = ctx.sign();
    // Every candidate is compared, in constant time, so the time taken says
    // nothing about which one matched or how much of it.
    let matched = signatures
        .iter()
        .fold(false, |found, s| constant_time::verify_slices_are_equal(expected.as_ref(), s).is_ok() | found);
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// A `v1` value: exactly 64 hex digits (an HMAC-SHA256), else `None`.
fn decode_signature(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
    }
    Some(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[derive(Debug, Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    /// Unix seconds; orders a subscription's events.
    #[serde(default)]
    created: Option<i64>,
    data: EventData,
}

#[derive(Debug, Deserialize)]
struct EventData {
    object: Value,
}

#[utoipa::path(post, path = "/v1/webhooks/stripe", tag = "webhooks",
    request_body(content = Object, description = "A Stripe event, signed in the Stripe-Signature header"),
    params(("Stripe-Signature" = String, Header, description = "t=<unix time>,v1=<hex HMAC-SHA256>[,v1=...]")),
    responses(
        (status = 200, description = "Accepted (also for replays and events that change nothing)", body = Received),
        (status = 400, description = "Signature missing, stale or wrong; or not a Stripe event", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ))]
pub async fn receive(hook: Webhook) -> Result<Json<Received>, ApiError> {
    let settings = &hook.api.settings;
    let tolerance = settings.stripe_tolerance_seconds as i64;
    hook.verify_hmac(&SIGNED, settings.stripe_webhook_secret.expose(), tolerance, Utc::now().timestamp())?;
    let Webhook { api, body, .. } = hook;
    let event: Event = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("bad_event", format!("not a Stripe event: {e}")))?;
    let mut tx = api.pool.begin().await?;
    let fresh: Option<String> = sqlx::query_scalar!(
        "INSERT INTO stripe_events (id, type) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING id",
        &event.id,
        &event.kind
    )
    .fetch_optional(&mut *tx)
    .await?;
    if fresh.is_none() {
        return Ok(Json(Received::new("duplicate")));
    }
    let obj = &event.data.object;
    let outcome = match event.kind.as_str() {
        "payment_intent.succeeded" => payment(&api, &mut tx, obj).await,
        "charge.refunded" => outcomes::refund(&mut tx, obj).await,
        "charge.dispute.created" => outcomes::dispute(&mut tx, obj, false).await,
        "charge.dispute.closed" => outcomes::dispute(&mut tx, obj, true).await,
        k if k.starts_with("customer.subscription.") => {
            let created = event.created.and_then(|t| DateTime::from_timestamp(t, 0)).unwrap_or_else(Utc::now);
            subscription(&mut tx, obj, k.ends_with(".deleted"), created).await
        }
        _ => Ok("ignored: event type not handled".to_string()),
    };
    let outcome = match outcome {
        Ok(o) => o,
        // Another delivery of the same payment got there first (the
        // one-card-per-payment-intent index): nothing to add.
        Err(ApiError::Internal(e)) if is_unique_violation(&e) => return Ok(Json(Received::new("duplicate"))),
        Err(e) => return Err(e),
    };
    tx.commit().await?;
    tracing::info!(event = %event.id, kind = %event.kind, %outcome, "Stripe event handled");
    Ok(Json(Received::new(outcome)))
}

fn is_unique_violation(e: &anyhow::Error) -> bool {
    let db = e.downcast_ref::<sqlx::Error>().or_else(|| match e.downcast_ref::<metering::Error>() {
        Some(metering::Error::Database(d)) => Some(d),
        _ => None,
    });
    matches!(db, Some(sqlx::Error::Database(d)) if d.code().as_deref() == Some("23505"))
}

pub(super) fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_str)
}

/// A known, active user named by the event's metadata.
async fn user_of(tx: &mut PgConnection, obj: &Value) -> Result<Option<UserId>, ApiError> {
    let Some(user) = text(obj, &["metadata", "user_id"]).and_then(|u| u.parse::<UserId>().ok()) else {
        return Ok(None);
    };
    let known: Option<bool> =
        sqlx::query_scalar!(r#"SELECT COALESCE(is_active, TRUE) AS "active!" FROM users WHERE id = $1"#, user.0)
            .fetch_optional(&mut *tx)
            .await?;
    Ok((known == Some(true)).then_some(user))
}

/// Serializes every event of one payment intent (payment, refunds,
/// disputes) until the transaction ends, so that two of them arriving at once
/// each see what the other wrote.
pub(super) async fn lock_intent(tx: &mut PgConnection, intent: &str) -> Result<(), ApiError> {
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtextextended('stripe_payment_intent:' || $1, 0)) AS locked", intent)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A pricing tier's price, if the tier exists and is active.
async fn tier_price(tx: &mut PgConnection, tier: &str) -> Result<Option<i64>, ApiError> {
    let price: Option<i32> =
        sqlx::query_scalar!("SELECT price_cents FROM pricing_tiers WHERE id = $1 AND COALESCE(active, TRUE)", tier)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(price.map(i64::from))
}

async fn payment(api: &Api, tx: &mut Transaction<'_, Postgres>, obj: &Value) -> Result<String, ApiError> {
    let Some(intent) = text(obj, &["id"]) else { return Ok("ignored: no payment intent id".into()) };
    let Some(user) = user_of(tx, obj).await? else {
        tracing::error!(intent, "paid payment intent without a known user in metadata.user_id");
        return Ok("ignored: metadata.user_id is not a known user".into());
    };
    let Some(tier) = text(obj, &["metadata", "tier_id"]) else {
        tracing::error!(intent, "paid payment intent without metadata.tier_id");
        return Ok("ignored: no metadata.tier_id".into());
    };
    lock_intent(tx, intent).await?;
    let amount = obj.get("amount_received").or_else(|| obj.get("amount")).and_then(Value::as_i64).unwrap_or(0);
    let currency = text(obj, &["currency"]).unwrap_or("usd").to_ascii_lowercase();
    let price = tier_price(tx, tier).await?;
    // The metadata names the tier; what was paid must be its price, or the
    // buyer chose the card and the amount separately.
    let expected = &api.settings.stripe_currency;
    let mismatch = price.is_some_and(|p| p != amount || currency != *expected);
    let payment: Option<uuid::Uuid> = sqlx::query_scalar!(
        "INSERT INTO payment_history (user_id, stripe_payment_intent_id, amount_cents, currency, status, metadata)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (stripe_payment_intent_id) DO NOTHING RETURNING id",
        user.0,
        intent,
        i32::try_from(amount).unwrap_or(i32::MAX),
        &currency,
        if mismatch { "amount_mismatch" } else { "succeeded" },
        obj.get("metadata")
    )
    .fetch_optional(&mut **tx)
    .await?;
    let Some(payment) = payment else { return Ok("duplicate".into()) };
    if let (true, Some(price)) = (mismatch, price) {
        tracing::error!(intent, tier, amount, %currency, price, expected_currency = %expected,
            "payment does not match its tier's price: recorded without a card");
        return Ok(format!(
            "payment recorded; no card: paid {amount} {currency}, tier {tier} costs {price} {expected}"
        ));
    }
    let card = match metering::cards::issue_in(tx, tier, 1, Some(user), Some(intent)).await {
        Ok(mut cards) => cards.pop().ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no card issued")))?,
        Err(
            metering::Error::TierNotFound { .. } | metering::Error::Record(metering::RecordError::InvalidTier { .. }),
        ) => {
            tracing::error!(intent, tier, "payment for an unknown or invalid tier: recorded without a card");
            return Ok("payment recorded; no card: unknown tier".into());
        }
        Err(e) => return Err(ApiError::Internal(e.into())),
    };
    if api.settings.stripe_activate_cards {
        metering::cards::activate_bought_in(tx, card.id, user, &api.activation).await.map_err(internal)?;
    }
    sqlx::query!("UPDATE payment_history SET time_card_id = $2 WHERE id = $1", payment, card.id.0)
        .execute(&mut **tx)
        .await?;
    // A refund or dispute that arrived first applies now.
    match outcomes::settle(tx, intent).await? {
        Some(settled) => Ok(format!("card_issued: {}; {settled}", card.id)),
        None => Ok(format!("card_issued: {}", card.id)),
    }
}

pub(super) fn internal(e: metering::Error) -> ApiError {
    ApiError::Internal(e.into())
}

fn unix(v: Option<&Value>) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(v?.as_i64()?, 0)
}

async fn subscription(
    tx: &mut Transaction<'_, Postgres>,
    obj: &Value,
    deleted: bool,
    created: DateTime<Utc>,
) -> Result<String, ApiError> {
    let Some(id) = text(obj, &["id"]) else { return Ok("ignored: no subscription id".into()) };
    let Some(user) = user_of(tx, obj).await? else { return Ok("ignored: metadata.user_id is not a known user".into()) };
    let item = obj.pointer("/items/data/0");
    let plan = item
        .and_then(|i| text(i, &["price", "id"]).or_else(|| text(i, &["plan", "id"])))
        .or_else(|| text(obj, &["plan", "id"]))
        .or_else(|| text(obj, &["metadata", "plan_id"]));
    let Some(plan) = plan else { return Ok("ignored: no plan or price id".into()) };
    let field = |k: &str| obj.get(k).or_else(|| item.and_then(|i| i.get(k)));
    let (Some(start), Some(end)) = (unix(field("current_period_start")), unix(field("current_period_end"))) else {
        return Ok("ignored: no current period".into());
    };
    let status = match text(obj, &["status"]).unwrap_or("") {
        _ if deleted => "canceled",
        s @ ("active" | "canceled" | "past_due" | "trialing" | "incomplete") => s,
        "unpaid" => "past_due",
        _ => "canceled",
    };
    let cancel = obj.get("cancel_at_period_end").and_then(Value::as_bool).unwrap_or(false);
    let applied = sqlx::query!(
        "INSERT INTO user_subscriptions (user_id, plan_id, status, current_period_start, current_period_end,
             cancel_at_period_end, stripe_subscription_id, stripe_event_created)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (stripe_subscription_id) WHERE stripe_subscription_id IS NOT NULL DO UPDATE SET
             user_id = EXCLUDED.user_id, plan_id = EXCLUDED.plan_id, status = EXCLUDED.status,
             current_period_start = EXCLUDED.current_period_start, current_period_end = EXCLUDED.current_period_end,
             cancel_at_period_end = EXCLUDED.cancel_at_period_end,
             stripe_event_created = EXCLUDED.stripe_event_created
         WHERE user_subscriptions.stripe_event_created IS NULL
            OR user_subscriptions.stripe_event_created <= EXCLUDED.stripe_event_created",
        user.0,
        plan,
        status,
        start,
        end,
        cancel,
        id,
        created
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if applied == 0 {
        return Ok("ignored: older than the subscription's last event".into());
    }
    Ok(format!("subscription {status}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let mut msg = format!("{t}.").into_bytes();
        msg.extend_from_slice(body);
        hmac::sign(&key, &msg).as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn any_matching_v1_signature_inside_the_window_verifies() {
        let body = br#"{"id":"evt_1"}"#;
        let good = sign("whsec_x", 1000, body);
        let header = format!("t=1000,v1={},v1={good},v0=abc", "00".repeat(32));
        assert_eq!(verify_signature("whsec_x", &header, body, 1100, 300), Ok(()));
        assert_eq!(verify_signature("whsec_x", &header, body, 1400, 300), Err(SignatureError::OutsideTolerance));
        assert_eq!(verify_signature("whsec_y", &header, body, 1100, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify_signature("whsec_x", &header, b"{}", 1100, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify_signature("whsec_x", "v1=ab", body, 1100, 300), Err(SignatureError::Malformed));
        assert_eq!(verify_signature("whsec_x", "t=1000", body, 1100, 300), Err(SignatureError::Malformed));
    }

    #[test]
    fn a_header_beyond_its_bounds_is_refused_before_any_hmac() {
        let body = br#"{"id":"evt_1"}"#;
        let good = sign("whsec_x", 1000, body);
        let filler = "00".repeat(32);
        let at_most = format!("t=1000,{}v1={good}", format!("v1={filler},").repeat(MAX_SIGNATURES - 1));
        assert_eq!(verify_signature("whsec_x", &at_most, body, 1000, 300), Ok(()));
        let too_many = format!("t=1000,{}v1={good}", format!("v1={filler},").repeat(MAX_SIGNATURES));
        assert_eq!(verify_signature("whsec_x", &too_many, body, 1000, 300), Err(SignatureError::Malformed));
        let short = format!("t=1000,v1={},v1={good}", &good[..62]);
        assert_eq!(verify_signature("whsec_x", &short, body, 1000, 300), Err(SignatureError::Malformed));
        let not_hex = format!("t=1000,v1={}zz", &good[..62]);
        assert_eq!(verify_signature("whsec_x", &not_hex, body, 1000, 300), Err(SignatureError::Malformed));
        let long = format!("t=1000,v1={good},x={}", "y".repeat(MAX_HEADER_BYTES));
        assert_eq!(verify_signature("whsec_x", &long, body, 1000, 300), Err(SignatureError::Malformed));
        assert_eq!(
            verify_signature("whsec_x", &format!("t=-9223372036854775808,v1={good}"), body, 1000, 300),
            Err(SignatureError::OutsideTolerance)
        );
    }
}
