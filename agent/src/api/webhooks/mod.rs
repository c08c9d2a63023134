//! Webhooks: Stripe (payments, refunds, subscriptions), LiveKit (rooms and
//! participants gone) and the ad server (rewarded views). Each verifies a
//! signature over the raw body before reading it and answers 400 on any
//! mismatch; each is safe to replay.

pub mod ads;
pub mod livekit;
pub mod stripe;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::HeaderMap;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::error::{ApiError, RawBody};
use crate::api::Api;

/// The 400 for a webhook whose signature is missing or does not verify,
/// counted in `mindbot_webhook_signature_failures_total{source}` (a rotated
/// secret not yet deployed, or someone forging events).
pub(crate) fn signature_refused(source: &'static str, message: &'static str) -> ApiError {
    metrics::counter!("mindbot_webhook_signature_failures_total", "source" => source).increment(1);
    ApiError::bad_request("bad_signature", message)
}

/// A webhook request as its handler reads it: the API, the headers and the
/// exact body bytes (signatures are over them; a body over the limit is the
/// API's 413).
pub struct Webhook {
    pub api: Arc<Api>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl FromRequest<Arc<Api>> for Webhook {
    type Rejection = ApiError;

    async fn from_request(req: Request, api: &Arc<Api>) -> Result<Self, ApiError> {
        let headers = req.headers().clone();
        let RawBody(body) = RawBody::from_request(req, api).await?;
        Ok(Webhook { api: Arc::clone(api), headers, body })
    }
}

/// A webhook signed as Stripe signs: header `t=<unix seconds>,v1=<hex>`, an
/// HMAC-SHA256 over `"{t}.{raw body}"` ([`stripe::verify_signature`]).
pub(crate) struct HmacSigned {
    /// The `source` label of the failure counter: `stripe`, `ads`.
    pub source: &'static str,
    /// The signature header, lowercase.
    pub header: &'static str,
    /// The 400's message.
    pub refusal: &'static str,
    /// The warning logged with the reason, e.g. `Stripe webhook refused`.
    pub log: &'static str,
}

impl Webhook {
    /// Checks the request's signature keyed with `secret` at `now` (Unix
    /// seconds); a missing header, an unset secret, a timestamp more than
    /// `tolerance` seconds away or a mismatch is [`signature_refused`].
    pub(crate) fn verify_hmac(
        &self,
        scheme: &HmacSigned,
        secret: &str,
        tolerance: i64,
        now: i64,
    ) -> Result<(), ApiError> {
        let bad = || signature_refused(scheme.source, scheme.refusal);
        let header = self.headers.get(scheme.header).and_then(|v| v.to_str().ok()).ok_or_else(bad)?;
        if secret.is_empty() {
            return Err(bad());
        }
        if let Err(e) = stripe::verify_signature(secret, header, &self.body, now, tolerance) {
            tracing::warn!(reason = ?e, "{}", scheme.log);
            return Err(bad());
        }
        Ok(())
    }
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
