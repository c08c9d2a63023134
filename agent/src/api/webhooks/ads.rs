//! `POST /v1/webhooks/ads`: the ad server's server-side confirmation of a
//! rewarded ad view, the way rewarded-ad networks vouch for a view. The
//! `X-Mindbot-Ad-Signature` header is `t=<unix seconds>,v1=<hex>`: an
//! HMAC-SHA256, keyed with `ads.callback_secret`, over `"{t}.{raw body}"`,
//! checked like Stripe's (bounded header, one HMAC, constant-time compare,
//! `t` within `ads.callback_tolerance_seconds`). Anything else is a 400.
//!
//! The reward itself is the metering crate's ([`metering::rewards`]): one
//! reward per `ad_view_id` (a replayed callback is answered `duplicate` and
//! earns nothing), only completed views of `ads.rewarded_types`, within
//! `ads.daily_reward_cap`. `revenue` is exact decimal text, stored as given.

use axum::Json;
use chrono::Utc;
use metering::rewards::{ConfirmedView, RewardOutcome};
use metering::UserId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{HmacSigned, Webhook};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::personas::{check_ad_id, check_ad_type, validate_slug};

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "x-mindbot-ad-signature";

/// How the ad server signs its callbacks (as Stripe signs).
const SIGNED: HmacSigned = HmacSigned {
    source: "ads",
    header: SIGNATURE_HEADER,
    refusal: "the X-Mindbot-Ad-Signature header does not verify",
    log: "ad callback refused",
};

/// Most digits before and after the point in `revenue`.
const REVENUE_DIGITS: (usize, usize) = (12, 8);

/// A rewarded ad view, as the ad server confirms it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdCallback {
    /// The user who watched (their id, the JWT's `sub`).
    pub user_id: Uuid,
    /// The ad network's id of this one view, 1 to 128 visible characters;
    /// one reward per id.
    #[schema(min_length = 1, max_length = 128)]
    pub ad_view_id: String,
    /// The ad's id (default: `ad_view_id`).
    #[serde(default)]
    pub ad_id: Option<String>,
    /// Lowercase letters, digits, `_` or `-`, up to 32; only `ads.rewarded_types` earn.
    #[schema(min_length = 1, max_length = 32, pattern = "^[a-z0-9_-]+$")]
    pub ad_type: String,
    /// The persona the ad was shown with (for the operator's report).
    #[serde(default)]
    pub persona: Option<String>,
    /// Whether the ad was watched to the end; only completed views earn.
    pub completed: bool,
    /// Seconds the ad played, 0 to 86400 (default 0).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 86400)]
    pub view_duration: i32,
    /// What the view earned, exact decimal text (`"0.0125"`): a JSON string,
    /// never a number, so no float rounds it.
    #[schema(value_type = String, example = "0.0125")]
    pub revenue: Value,
    /// When the view ended, Unix seconds; within the tolerance of now.
    pub timestamp: i64,
}

/// What the callback did.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdCallbackResult {
    pub received: bool,
    /// `rewarded`, `not_completed`, `not_rewarded_type`, `daily_cap_reached` or `duplicate`.
    pub outcome: String,
    /// The recorded interaction.
    pub interaction: Uuid,
    /// Talk time this view earned (0 unless `rewarded`).
    pub rewarded_seconds: i32,
    /// The user's earned seconds today after this view (absent for `duplicate`).
    pub earned_today_seconds: Option<i64>,
}

#[utoipa::path(post, path = "/v1/webhooks/ads", tag = "webhooks", request_body = AdCallback,
    params(("X-Mindbot-Ad-Signature" = String, Header,
        description = "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"{t}.{raw body}\" keyed with ads.callback_secret>")),
    responses(
        (status = 200, description = "Recorded (rewarded or not), or a duplicate of a view already recorded", body = AdCallbackResult),
        (status = 400, description = "Missing or bad signature (`bad_signature`), or not JSON (`bad_event`)", body = ErrorBody),
        (status = 422, description = "A field is invalid (named), e.g. an unknown user_id", body = ErrorBody),
    ))]
pub async fn receive(hook: Webhook) -> Result<Json<AdCallbackResult>, ApiError> {
    let tolerance = hook.api.ads.callback_tolerance_seconds as i64;
    let now = Utc::now().timestamp();
    hook.verify_hmac(&SIGNED, hook.api.ads.callback_secret.expose(), tolerance, now)?;
    let Webhook { api, body, .. } = hook;
    let cb: AdCallback = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("bad_event", format!("not an ad callback: {e}")))?;
    let view = validate(&cb, now, tolerance)?;
    let outcome = match metering::rewards::confirm_view(&api.pool, &view, &api.rewards).await {
        Ok(o) => o,
        Err(e @ (metering::Error::UserNotFound { .. } | metering::Error::UserInactive { .. })) => {
            return Err(ApiError::invalid("user_id", e.to_string()))
        }
        Err(e) => return Err(e.into()),
    };
    let result = match outcome {
        RewardOutcome::Rewarded { interaction, seconds, earned_today, .. } => {
            metrics::counter!("mindbot_ad_rewards_total").increment(1);
            metrics::counter!("mindbot_ad_earned_seconds_total").increment(seconds as u64);
            AdCallbackResult {
                received: true,
                outcome: "rewarded".into(),
                interaction,
                rewarded_seconds: seconds,
                earned_today_seconds: Some(earned_today),
            }
        }
        RewardOutcome::NotRewarded { interaction, why, earned_today } => AdCallbackResult {
            received: true,
            outcome: why.as_str().into(),
            interaction,
            rewarded_seconds: 0,
            earned_today_seconds: Some(earned_today),
        },
        RewardOutcome::AlreadyRecorded { interaction } => AdCallbackResult {
            received: true,
            outcome: "duplicate".into(),
            interaction,
            rewarded_seconds: 0,
            earned_today_seconds: None,
        },
    };
    tracing::info!(user = %view.user, ad_type = %view.ad_type, outcome = %result.outcome,
        rewarded_seconds = result.rewarded_seconds, "ad callback");
    Ok(Json(result))
}

/// Every field checked, naming the first bad one; nothing is written before.
fn validate(cb: &AdCallback, now: i64, tolerance: i64) -> Result<ConfirmedView, ApiError> {
    check_ad_id("ad_view_id", &cb.ad_view_id)?;
    let ad_id = cb.ad_id.clone().unwrap_or_else(|| cb.ad_view_id.clone());
    check_ad_id("ad_id", &ad_id)?;
    check_ad_type(&cb.ad_type)?;
    if let Some(p) = &cb.persona {
        validate_slug(p)?;
    }
    if !(0..=86_400).contains(&cb.view_duration) {
        return Err(ApiError::invalid("view_duration", "must be whole seconds from 0 to 86400"));
    }
    let revenue = match &cb.revenue {
        Value::String(s) if is_decimal(s) => s.clone(),
        _ => {
            return Err(ApiError::invalid(
                "revenue",
                "must be a non-negative decimal as a JSON string (e.g. \"0.0125\"), at most 12 digits before the point and 8 after",
            ))
        }
    };
    if now.checked_sub(cb.timestamp).is_none_or(|age| age.abs() > tolerance) {
        return Err(ApiError::invalid("timestamp", format!("must be within {tolerance} s of now (Unix seconds)")));
    }
    Ok(ConfirmedView {
        user: UserId(cb.user_id),
        ad_view_id: cb.ad_view_id.clone(),
        ad_id,
        ad_type: cb.ad_type.clone(),
        persona: cb.persona.clone(),
        view_duration: cb.view_duration,
        completed: cb.completed,
        revenue,
    })
}

/// `digits[.digits]`, bounded, no sign, no exponent.
fn is_decimal(s: &str) -> bool {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    !int.is_empty()
        && int.len() <= REVENUE_DIGITS.0
        && digits(int)
        && digits(frac)
        && frac.len() <= REVENUE_DIGITS.1
        && (s.contains('.') != frac.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revenue_is_plain_decimal_text() {
        for ok in ["0", "0.0125", "12.5", "999999999999.12345678"] {
            assert!(is_decimal(ok), "{ok}");
        }
        for bad in ["", ".5", "5.", "-1", "1e3", "0.123456789", "1,5", " 1", "NaN"] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }
}
