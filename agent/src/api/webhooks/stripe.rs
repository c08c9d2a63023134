//! `POST /v1/webhooks/stripe`. The `Stripe-Signature` header carries a
//! timestamp `t` and one or more `v1` signatures: HMAC-SHA256, keyed with the
//! endpoint's secret, over `"{t}.{raw body}"`. A timestamp outside the
//! tolerance window or no matching signature is a 400.
//!
//! Each event is handled in one transaction that also records its id, so a
//! replayed event changes nothing; a second payment event for one payment
//! intent finds its `payment_history` row (and the database allows one card
//! per payment intent). `payment_intent.succeeded` issues the tier's card to
//! the buyer, `charge.refunded` marks the payment refunded and refunds the
//! card if none of it was used, `customer.subscription.*` keeps
//! `user_subscriptions` current.

use std::sync::Arc;

use aws_lc_rs::hmac;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use chrono::{DateTime, Utc};
use metering::{CardId, UserId};
use serde::Deserialize;
use serde_json::Value;
use sqlx::{PgConnection, Postgres, Transaction};

use super::Received;
use crate::api::error::{ApiError, ErrorBody, RawBody};
use crate::api::Api;

/// Why a signature header was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum SignatureError {
    Malformed,
    OutsideTolerance,
    Mismatch,
}

/// Checks a `Stripe-Signature` header over `body` at `now` (Unix seconds).
pub fn verify_signature(
    secret: &str,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => timestamp = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            Some(("v1", v)) => signatures.extend(decode_hex(v)),
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - t).abs() > tolerance_secs {
        return Err(SignatureError::OutsideTolerance);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(body);
    // `verify` compares in constant time.
    if signatures.iter().any(|s| hmac::verify(&key, &message, s).is_ok()) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    s.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Some(hex_digit(*hi)? << 4 | hex_digit(*lo)?),
            _ => None,
        })
        .collect()
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
pub async fn receive(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<Received>, ApiError> {
    let bad = || super::signature_refused("stripe", "the Stripe-Signature header does not verify");
    let secret = api.settings.stripe_webhook_secret.expose();
    let header = headers.get("stripe-signature").and_then(|v| v.to_str().ok()).ok_or_else(bad)?;
    if secret.is_empty() {
        return Err(bad());
    }
    let tolerance = api.settings.stripe_tolerance_seconds as i64;
    if let Err(e) = verify_signature(secret, header, &body, Utc::now().timestamp(), tolerance) {
        tracing::warn!(reason = ?e, "Stripe webhook refused");
        return Err(bad());
    }
    let event: Event = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("bad_event", format!("not a Stripe event: {e}")))?;
    let mut tx = api.pool.begin().await?;
    let fresh: Option<String> =
        sqlx::query_scalar("INSERT INTO stripe_events (id, type) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING id")
            .bind(&event.id)
            .bind(&event.kind)
            .fetch_optional(&mut *tx)
            .await?;
    if fresh.is_none() {
        return Ok(Json(Received::new("duplicate")));
    }
    let obj = &event.data.object;
    let outcome = match event.kind.as_str() {
        "payment_intent.succeeded" => payment(&api, &mut tx, obj).await,
        "charge.refunded" => refund(&mut tx, obj).await,
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

fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_str)
}

/// A known, active user named by the event's metadata.
async fn user_of(tx: &mut PgConnection, obj: &Value) -> Result<Option<UserId>, ApiError> {
    let Some(user) = text(obj, &["metadata", "user_id"]).and_then(|u| u.parse::<UserId>().ok()) else {
        return Ok(None);
    };
    let known: Option<bool> = sqlx::query_scalar("SELECT COALESCE(is_active, TRUE) FROM users WHERE id = $1")
        .bind(user)
        .fetch_optional(&mut *tx)
        .await?;
    Ok((known == Some(true)).then_some(user))
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
    let amount = obj.get("amount_received").or_else(|| obj.get("amount")).and_then(Value::as_i64).unwrap_or(0);
    let currency = text(obj, &["currency"]).unwrap_or("usd");
    let payment: Option<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO payment_history (user_id, stripe_payment_intent_id, amount_cents, currency, status, metadata) \
         VALUES ($1, $2, $3, $4, 'succeeded', $5) ON CONFLICT (stripe_payment_intent_id) DO NOTHING RETURNING id",
    )
    .bind(user)
    .bind(intent)
    .bind(i32::try_from(amount).unwrap_or(i32::MAX))
    .bind(currency)
    .bind(obj.get("metadata"))
    .fetch_optional(&mut **tx)
    .await?;
    let Some(payment) = payment else { return Ok("duplicate".into()) };
    let card = match metering::cards::issue_in(tx, tier, 1, Some(user), Some(intent)).await {
        Ok(mut cards) => cards.pop().ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no card issued")))?,
        Err(metering::Error::TierNotFound { .. } | metering::Error::InvalidTier { .. }) => {
            tracing::error!(intent, tier, "payment for an unknown or invalid tier: recorded without a card");
            return Ok("payment recorded; no card: unknown tier".into());
        }
        Err(e) => return Err(ApiError::Internal(e.into())),
    };
    if api.settings.stripe_activate_cards {
        let now = Utc::now();
        sqlx::query("UPDATE time_cards SET status = 'active', activated_at = $2, expires_at = $3 WHERE id = $1")
            .bind(card.id)
            .bind(now)
            .bind(api.activation.validity.map(|v| now + v))
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("UPDATE payment_history SET time_card_id = $2 WHERE id = $1")
        .bind(payment)
        .bind(card.id)
        .execute(&mut **tx)
        .await?;
    Ok(format!("card_issued: {}", card.id))
}

async fn refund(tx: &mut Transaction<'_, Postgres>, obj: &Value) -> Result<String, ApiError> {
    let Some(intent) = text(obj, &["payment_intent"]) else { return Ok("ignored: no payment_intent".into()) };
    let full = obj.get("refunded").and_then(Value::as_bool).unwrap_or(false);
    let status = if full { "refunded" } else { "partially_refunded" };
    let card: Option<Option<CardId>> = sqlx::query_scalar(
        "UPDATE payment_history SET status = $2 WHERE stripe_payment_intent_id = $1 RETURNING time_card_id",
    )
    .bind(intent)
    .bind(status)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(card) = card else { return Ok("ignored: unknown payment intent".into()) };
    let Some(card) = card.filter(|_| full) else { return Ok(format!("payment {status}")) };
    match metering::cards::refund_in(tx, card).await {
        Ok(_) => Ok("payment refunded; card refunded".into()),
        Err(e @ (metering::Error::RefundPartlyUsed { .. } | metering::Error::RefundNotAllowed { .. })) => {
            tracing::warn!(intent, %card, error = %e, "payment refunded but its card is kept");
            Ok(format!("payment refunded; card kept: {e}"))
        }
        Err(e) => Err(ApiError::Internal(e.into())),
    }
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
    let applied = sqlx::query(
        "INSERT INTO user_subscriptions (user_id, plan_id, status, current_period_start, current_period_end, \
             cancel_at_period_end, stripe_subscription_id, stripe_event_created) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (stripe_subscription_id) WHERE stripe_subscription_id IS NOT NULL DO UPDATE SET \
             user_id = EXCLUDED.user_id, plan_id = EXCLUDED.plan_id, status = EXCLUDED.status, \
             current_period_start = EXCLUDED.current_period_start, current_period_end = EXCLUDED.current_period_end, \
             cancel_at_period_end = EXCLUDED.cancel_at_period_end, \
             stripe_event_created = EXCLUDED.stripe_event_created \
         WHERE user_subscriptions.stripe_event_created IS NULL \
            OR user_subscriptions.stripe_event_created <= EXCLUDED.stripe_event_created",
    )
    .bind(user)
    .bind(plan)
    .bind(status)
    .bind(start)
    .bind(end)
    .bind(cancel)
    .bind(id)
    .bind(created)
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
}
