//! Webhooks: Stripe (payments, refunds, subscriptions) and LiveKit (rooms and
//! participants gone). Both verify a signature over the raw body before
//! reading it and answer 400 on any mismatch; both are safe to replay.

pub mod livekit;
pub mod stripe;

use serde::Serialize;
use utoipa::ToSchema;

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
