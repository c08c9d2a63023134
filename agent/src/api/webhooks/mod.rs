//! Webhooks: Stripe (payments, refunds, subscriptions), LiveKit (rooms and
//! participants gone) and the ad server (rewarded views). Each verifies a
//! signature over the raw body before reading it and answers 400 on any
//! mismatch; each is safe to replay.

pub mod ads;
pub mod livekit;
pub mod stripe;

use serde::Serialize;
use utoipa::ToSchema;

use crate::api::error::ApiError;

/// The 400 for a webhook whose signature is missing or does not verify,
/// counted in `mindbot_webhook_signature_failures_total{source}` (a rotated
/// secret not yet deployed, or someone forging events).
pub(crate) fn signature_refused(source: &'static str, message: &'static str) -> ApiError {
    metrics::counter!("mindbot_webhook_signature_failures_total", "source" => source).increment(1);
    ApiError::bad_request("bad_signature", message)
}

/// What a webhook answers when the event was accepted.
#[derive(Debug, Serialize, ToSchema)]
pub struct Received {
    pub received: bool,
    /// What was done: `card_issued`, `duplicate`, `ignored: ...`, `sessions_closed: N`, ...
    pub outcome: String,
}

impl Received {
    pub fn new(outcome: impl Into<String>) -> Received {
        Received { received: true, outcome: outcome.into() }
    }
}
