//! `POST /v1/cards/activate` (a code for the caller: idempotent for the same
//! user and code, wrong codes rate-limited per user by the metering crate's
//! failure log) and `GET /v1/tiers` (active pricing tiers).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use chrono::Utc;
use metering::records::{CardStatus, TimeCard};
use metering::{CardId, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::AuthUser;
use super::error::{ApiError, ApiJson, ErrorBody};
use super::me::CardView;
use super::responses::{JsonBody, NeedsUser};
use super::Api;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Activate {
    /// The card's activation code, e.g. `7K2M-Q9XD-4HTR-B0WE-N5JC` (case, spaces and dashes are forgiven).
    #[schema(max_length = 64)]
    pub code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Activated {
    pub card: CardView,
    /// False when the card was already active for this user (a repeated request).
    pub newly_activated: bool,
}

#[utoipa::path(post, path = "/v1/cards/activate", tag = "cards", request_body = Activate,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The card is active for the caller", body = Activated),
        JsonBody,
        NeedsUser,
        (status = 409, description = "The code was used already", body = ErrorBody),
        (status = 422, description = "The code is not valid (field `code`)", body = ErrorBody),
        (status = 429, description = "Too many wrong codes; see Retry-After", body = ErrorBody),
    ))]
pub async fn activate(
    State(api): State<Arc<Api>>,
    auth: AuthUser,
    ApiJson(req): ApiJson<Activate>,
) -> Result<Json<Activated>, ApiError> {
    if req.code.len() > 64 {
        return Err(ApiError::invalid("code", "is too long to be an activation code"));
    }
    let now = Utc::now();
    use metering::Error as E;
    match metering::cards::activate(&api.pool, &req.code, auth.user, &api.activation).await {
        Ok(card) => {
            tracing::info!(user = %auth.user, card = %card.id, "card activated");
            Ok(Json(Activated { card: CardView::of(&card, now), newly_activated: true }))
        }
        Err(E::CardAlreadyActive { card }) => {
            let c = sqlx::query_as!(
                TimeCard,
                r#"SELECT id AS "id: CardId", user_id AS "user_id: UserId", activation_code, total_minutes,
                       remaining_minutes, activated_at, expires_at, COALESCE(created_at, NOW()) AS "created_at!",
                       COALESCE(status, 'pending') AS "status!: CardStatus", stripe_payment_intent_id,
                       remaining_sub_ms, suspended_at IS NOT NULL AS "suspended!", kind = 'earned' AS "earned!"
                   FROM time_cards WHERE id = $1"#,
                card.0
            )
            .fetch_one(&api.pool)
            .await?;
            Ok(Json(Activated { card: CardView::of(&c, now), newly_activated: false }))
        }
        Err(E::BadActivationCode { .. }) => Err(ApiError::invalid("code", "no card has this activation code")),
        Err(E::CodeAlreadyUsed { .. }) => {
            Err(ApiError::Conflict { code: "code_used", message: "this activation code has been used".into() })
        }
        Err(E::ActivationRateLimited { retry_after_secs }) => Err(ApiError::TooManyRequests {
            code: "rate_limited",
            message: format!("too many wrong codes; try again in {retry_after_secs} s"),
            retry_after: Some(retry_after_secs),
        }),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Tier {
    pub id: String,
    pub name: String,
    pub hours: i32,
    pub bonus_minutes: i32,
    /// Minutes on the card this tier issues (hours x 60 + bonus).
    pub card_minutes: i32,
    pub price_cents: i32,
    pub description: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TierList {
    pub tiers: Vec<Tier>,
}

#[utoipa::path(get, path = "/v1/tiers", tag = "cards",
    responses(
        (status = 200, description = "Active pricing tiers, cheapest first", body = TierList),
    ))]
pub async fn tiers(State(api): State<Arc<Api>>) -> Result<Json<TierList>, ApiError> {
    let tiers = metering::cards::tiers(&api.pool)
        .await?
        .into_iter()
        .filter_map(|t| {
            let card_minutes = t.card_minutes().ok()?;
            Some(Tier {
                id: t.id,
                name: t.name,
                hours: t.hours,
                bonus_minutes: t.bonus_minutes,
                card_minutes,
                price_cents: t.price_cents,
                description: t.description,
            })
        })
        .collect();
    Ok(Json(TierList { tiers }))
}
