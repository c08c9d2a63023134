//! What Stripe says of a payment after it was paid: refunds
//! (`charge.refunded`) and disputes (`charge.dispute.created`,
//! `charge.dispute.closed`). Each is merged into `stripe_payment_outcomes`
//! (a flag once set stays set, a closed dispute is never reopened), so the
//! order of these events and of the payment does not matter: whichever
//! arrives last brings the payment's record and card in line, through the
//! metering crate's card functions.

use metering::CardId;
use serde_json::Value;
use sqlx::{Postgres, Transaction};

use super::{internal, lock_intent, text};
use crate::api::error::ApiError;

/// What a refund or dispute event says about its payment.
#[derive(Debug, Default, Clone, Copy)]
struct Said {
    refunded: bool,
    partially_refunded: bool,
    dispute: Option<&'static str>,
}

/// Records what Stripe said about `intent` (merged with what it said before,
/// in whatever order) and brings its payment and card in line.
async fn record_outcome(tx: &mut Transaction<'_, Postgres>, intent: &str, said: Said) -> Result<String, ApiError> {
    lock_intent(tx, intent).await?;
    sqlx::query!(
        "INSERT INTO stripe_payment_outcomes (stripe_payment_intent_id, refunded, partially_refunded, dispute)
         VALUES ($1, $2, $3, $4) ON CONFLICT (stripe_payment_intent_id) DO UPDATE SET
             refunded = stripe_payment_outcomes.refunded OR EXCLUDED.refunded,
             partially_refunded = stripe_payment_outcomes.partially_refunded OR EXCLUDED.partially_refunded,
             dispute = CASE WHEN stripe_payment_outcomes.dispute IN ('won', 'lost') THEN stripe_payment_outcomes.dispute
                            ELSE COALESCE(EXCLUDED.dispute, stripe_payment_outcomes.dispute) END,
             updated_at = NOW()",
        intent,
        said.refunded,
        said.partially_refunded,
        said.dispute
    )
    .execute(&mut **tx)
    .await?;
    match settle(tx, intent).await? {
        Some(settled) => Ok(settled),
        None => {
            tracing::warn!(intent, "refund or dispute before its payment: recorded, applied when the payment arrives");
            Ok("recorded before its payment".into())
        }
    }
}

/// Applies what Stripe said about `intent` to its payment and card, through
/// the metering crate's card rules: a full refund or a lost dispute revokes
/// what is left on the card (what was used stays charged); an open dispute
/// suspends it; a won dispute reinstates it. A partial refund keeps the card
/// (the merchant chose to return part of the money). `None` while the
/// payment itself has not arrived. Running it again changes nothing.
pub(super) async fn settle(tx: &mut Transaction<'_, Postgres>, intent: &str) -> Result<Option<String>, ApiError> {
    let said = sqlx::query!(
        "SELECT refunded, partially_refunded, dispute FROM stripe_payment_outcomes WHERE stripe_payment_intent_id = $1",
        intent
    )
    .fetch_optional(&mut **tx)
    .await?;
    let Some((refunded, partially, dispute)) = said.map(|s| (s.refunded, s.partially_refunded, s.dispute)) else {
        return Ok(None);
    };
    let paid = sqlx::query!(
        r#"SELECT id, status, time_card_id AS "time_card_id: CardId"
           FROM payment_history WHERE stripe_payment_intent_id = $1 FOR UPDATE"#,
        intent
    )
    .fetch_optional(&mut **tx)
    .await?;
    let Some((payment, was, card)) = paid.map(|p| (p.id, p.status, p.time_card_id)) else { return Ok(None) };
    let dispute = dispute.as_deref();
    let status = match () {
        _ if dispute == Some("lost") => "dispute_lost",
        _ if refunded => "refunded",
        _ if dispute == Some("open") => "disputed",
        _ if partially => "partially_refunded",
        _ if was == "disputed" => "succeeded",
        _ => was.as_str(),
    }
    .to_string();
    sqlx::query!("UPDATE payment_history SET status = $2 WHERE id = $1", payment, &status).execute(&mut **tx).await?;
    let Some(card) = card else { return Ok(Some(format!("payment {status}; no card"))) };
    use metering::cards::{self, Revocation};
    let c = if dispute == Some("lost") {
        cards::revoke_in(tx, card, Revocation::DisputeLost).await
    } else if refunded {
        cards::revoke_in(tx, card, Revocation::Refund).await
    } else if dispute == Some("open") {
        cards::suspend_in(tx, card).await
    } else {
        cards::reinstate_in(tx, card).await
    }
    .map_err(internal)?;
    let state = if c.suspended { "suspended".to_string() } else { c.status.to_string() };
    tracing::info!(intent, %card, payment_status = %status, card_status = %state, "payment outcome applied to its card");
    Ok(Some(format!("payment {status}; card {state}")))
}

pub(super) async fn refund(tx: &mut Transaction<'_, Postgres>, obj: &Value) -> Result<String, ApiError> {
    let Some(intent) = text(obj, &["payment_intent"]) else { return Ok("ignored: no payment_intent".into()) };
    let full = obj.get("refunded").and_then(Value::as_bool).unwrap_or(false);
    record_outcome(tx, intent, Said { refunded: full, partially_refunded: !full, dispute: None }).await
}

/// `charge.dispute.created` and `charge.dispute.closed` (won, lost, or a
/// closed inquiry, which withdrew nothing and counts as won).
pub(super) async fn dispute(tx: &mut Transaction<'_, Postgres>, obj: &Value, closed: bool) -> Result<String, ApiError> {
    let Some(intent) = text(obj, &["payment_intent"]) else { return Ok("ignored: no payment_intent".into()) };
    let state = match (closed, text(obj, &["status"])) {
        (false, _) => "open",
        (true, Some("lost")) => "lost",
        (true, _) => "won",
    };
    record_outcome(tx, intent, Said { dispute: Some(state), ..Said::default() }).await
}
