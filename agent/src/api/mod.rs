//! The public HTTP API the MindBot apps call, under `/v1` on the operator's
//! HTTP server. One shared context ([`Api`]: pool, token verifier, personas,
//! LiveKit settings) is handed to every handler; the money and persona rules
//! are the `metering` and `personas` crates', this module only checks input,
//! asks them, and answers JSON.
//!
//! - [`auth`]: end users' bearer JWTs.
//! - [`error`]: the one error type and the extractors that produce it.
//! - [`sessions`]: `POST /v1/sessions`, a token that dispatches the agent.
//! - [`token_source`]: `POST /v1/token-source`, the same in the shape of
//!   LiveKit's `TokenSource.endpoint`.
//! - [`me`]: the caller's balance, cards and session history.
//! - [`cards`]: card activation and pricing tiers.
//! - [`personas`]: the personas a user may pick, ratings, ad views.
//! - [`my_personas`]: a user's own custom personas (create, list, edit, retire).
//! - [`webhooks`]: Stripe payments and subscriptions, LiveKit room events,
//!   the ad server's rewarded views.
//! - [`openapi`]: the OpenAPI document, generated from the handlers.
//! - [`dev`]: the local demo's sign-in as the demo user (`api.dev_login`).
//! - [`limits`]: per-client rate limits, load shedding, request timeouts.
//!
//! The API has its own database pool (`api.database_max_connections`): the
//! worker's pool belongs to the meter and session bookkeeping, and no `/v1`
//! request may wait on it or take from it.

pub mod auth;
pub mod cards;
pub mod dev;
pub mod error;
pub mod limits;
pub mod me;
pub mod my_personas;
pub mod openapi;
pub mod personas;
pub mod responses;
pub mod sessions;
pub mod token_source;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use ::personas::{AccessPolicy, Catalog, CustomRules};
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, patch, post};
use axum::Router;
use livekit_api::access_token::TokenVerifier;
use livekit_api::webhooks::WebhookReceiver;
use metering::cards::ActivationPolicy;
use sqlx::PgPool;

use crate::config::{AdsConfig, ApiConfig, Config, LivekitConfig};
use auth::JwtVerifier;
use error::ApiError;

/// What every handler shares.
pub struct Api {
    pub pool: PgPool,
    pub jwt: JwtVerifier,
    pub catalog: Catalog,
    /// Custom personas' rules, the worker's too (no built-in slug, the pricing floor).
    pub rules: CustomRules,
    pub access: AccessPolicy,
    pub activation: ActivationPolicy,
    pub livekit: LivekitConfig,
    pub settings: ApiConfig,
    pub livekit_webhooks: WebhookReceiver,
    /// Rewarded ads: the callback's key and tolerance.
    pub ads: AdsConfig,
    /// What a confirmed ad view earns.
    pub rewards: metering::rewards::RewardPolicy,
}

impl Api {
    /// From the configuration; fails naming the key when a key does not parse.
    pub fn new(config: &Config, pool: PgPool) -> anyhow::Result<Api> {
        let lk = &config.livekit;
        if config.api.stripe_webhook_secret.expose().is_empty() {
            tracing::warn!("api.stripe_webhook_secret is empty: every Stripe webhook will be refused");
        }
        Ok(Api {
            pool,
            jwt: JwtVerifier::new(&config.api)?,
            catalog: Catalog::builtin(),
            rules: config.personas.custom_rules(),
            access: config.personas.access_policy(),
            activation: config.activation_policy(),
            livekit: lk.clone(),
            settings: config.api.clone(),
            livekit_webhooks: WebhookReceiver::new(TokenVerifier::with_api_key(&lk.api_key, lk.api_secret.expose())),
            ads: config.ads.clone(),
            rewards: config.reward_policy(),
        })
    }

    /// The LiveKit URL apps are told to join.
    pub fn public_livekit_url(&self) -> &str {
        if self.settings.public_livekit_url.is_empty() {
            &self.livekit.url
        } else {
            &self.settings.public_livekit_url
        }
    }

    pub fn session_token_ttl(&self) -> Duration {
        Duration::from_secs(self.settings.session_token_ttl_seconds)
    }
}

/// Every `/v1` route, behind the body limit and the [`limits`]; merged into
/// the operator router. `request_timeout` is `http.request_timeout_ms`.
pub fn router(api: Arc<Api>, request_timeout: Duration) -> anyhow::Result<Router> {
    let limits = limits::Limits::new(&api.settings, request_timeout)?;
    let mut users = Router::new()
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/sessions", post(sessions::create))
        .route("/v1/token-source", post(token_source::create))
        .route("/v1/me/balance", get(me::balance))
        .route("/v1/me/cards", get(me::cards))
        .route("/v1/me/sessions", get(me::sessions))
        .route("/v1/me/personas", get(my_personas::list).post(my_personas::create))
        .route("/v1/me/personas/{slug}", patch(my_personas::edit).delete(my_personas::remove))
        .route("/v1/cards/activate", post(cards::activate))
        .route("/v1/tiers", get(cards::tiers))
        .route("/v1/personas", get(personas::list))
        .route("/v1/personas/{slug}/ratings", post(personas::rate))
        .route("/v1/ads/interactions", post(personas::ad_interaction))
        // Unknown /v1 paths are the API's JSON 404; other paths belong to the web app.
        .route("/v1", any(not_found))
        .route("/v1/{*rest}", any(not_found));
    if api.settings.dev_login {
        tracing::warn!("api.dev_login is on: anyone reaching this loopback address can sign in as the demo user");
        users = users.route("/v1/dev/login", get(dev::available).post(dev::login));
    }
    let webhooks = Router::new()
        .route("/v1/webhooks/stripe", post(webhooks::stripe::receive))
        .route("/v1/webhooks/livekit", post(webhooks::livekit::receive))
        .route("/v1/webhooks/ads", post(webhooks::ads::receive));
    Ok(limits
        .guard_load(webhooks)
        .merge(limits.guard(users))
        .layer(DefaultBodyLimit::max(api.settings.body_limit_bytes))
        .with_state(api))
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such endpoint")
}
