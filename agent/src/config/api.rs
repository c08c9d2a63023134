//! `[api]` and `[ads]`: the public API under `/v1` (end users' tokens,
//! session rules, Stripe, its own pool and limits) and what a rewarded ad
//! view earns.

use anyhow::{bail, Result};
use serde::Deserialize;

use super::{HttpConfig, Secret};

/// The shortest HS256 key accepted for end users' tokens, in bytes.
const MIN_HS256_KEY_BYTES: usize = 32;

/// The public HTTP API under `/v1` (see `config.toml` for each key).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Serve `/v1` beside the operator endpoints.
    pub enabled: bool,
    /// The only algorithm end-user tokens may use.
    pub jwt_algorithm: JwtAlgorithm,
    /// The HS256 secret, or the RS256/ES256 public key in PEM.
    pub jwt_key: Secret,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    /// The claim holding the user's age in years (optional in a token).
    pub jwt_age_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub jwt_leeway_seconds: u64,
    /// The LiveKit URL handed to apps; empty means `livekit.url`.
    pub public_livekit_url: String,
    /// Lifetime of the participant tokens `POST /v1/sessions` signs.
    pub session_token_ttl_seconds: u64,
    /// A session needs the balance for this many seconds at the persona's multiplier.
    pub min_session_seconds: u64,
    /// Active sessions plus live (unused, unexpired) session tokens one user may hold at once.
    pub max_open_sessions: u32,
    /// Custom personas one user may own (active and retired).
    pub max_custom_personas: u32,
    /// Largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// Stripe's webhook signing secret (`whsec_...`); empty refuses every Stripe webhook.
    pub stripe_webhook_secret: Secret,
    /// How old a Stripe signature's timestamp may be.
    pub stripe_tolerance_seconds: u64,
    /// A paid card is active at once (true) or pending until its code is activated.
    pub stripe_activate_cards: bool,
    /// The currency `pricing_tiers.price_cents` is in (ISO 4217, lower case, as
    /// Stripe writes it): a payment in another currency issues no card.
    pub stripe_currency: String,
    /// Connections in the API's own pool (never the worker's).
    pub database_max_connections: u32,
    /// How long a request waits for a pooled connection before a 503.
    pub database_acquire_timeout_ms: u64,
    /// `/v1` requests in progress at once; more are shed with a 503.
    pub max_concurrent_requests: u32,
    /// Per-client requests per second on `/v1` (token bucket refill).
    pub rate_limit_per_second: u32,
    /// Per-client burst on `/v1` (token bucket size).
    pub rate_limit_burst: u32,
    /// Key the rate limit on X-Forwarded-For's last address instead of the peer.
    pub trust_x_forwarded_for: bool,
    /// `POST /v1/dev/login`: a JWT for the demo user, for a loopback demo only.
    pub dev_login: bool,
}

/// The signature algorithm of end users' tokens (`api.jwt_algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256: `api.jwt_key` is the shared secret.
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256: `api.jwt_key` is the public key in PEM.
    Rs256,
    /// ECDSA P-256 with SHA-256: `api.jwt_key` is the public key in PEM.
    Es256,
}

impl<'de> Deserialize<'de> for JwtAlgorithm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let given = String::deserialize(d)?;
        super::one_of(
            "api.jwt_algorithm",
            &[("HS256", JwtAlgorithm::Hs256), ("RS256", JwtAlgorithm::Rs256), ("ES256", JwtAlgorithm::Es256)],
            &given,
        )
    }
}

impl ApiConfig {
    /// Checks the API's keys; `api.dev_login` also depends on `http.address`.
    pub(super) fn validate(&self, http: &HttpConfig) -> Result<()> {
        if self.jwt_age_claim.trim().is_empty() {
            bail!("config key api.jwt_age_claim must not be empty");
        }
        if !self.public_livekit_url.is_empty() && !super::services::is_livekit_url(&self.public_livekit_url) {
            bail!("config key api.public_livekit_url must start with ws://, wss://, http:// or https://");
        }
        if !(10..=86_400).contains(&self.session_token_ttl_seconds) {
            bail!("config key api.session_token_ttl_seconds must be between 10 and 86400");
        }
        if self.min_session_seconds == 0 || self.max_open_sessions == 0 || self.max_custom_personas == 0 {
            bail!(
                "config keys api.min_session_seconds, api.max_open_sessions and api.max_custom_personas must be positive"
            );
        }
        if !(1024..=10 * 1024 * 1024).contains(&self.body_limit_bytes) {
            bail!("config key api.body_limit_bytes must be between 1024 and 10485760");
        }
        if self.stripe_tolerance_seconds == 0 {
            bail!("config key api.stripe_tolerance_seconds must be positive");
        }
        let currency = &self.stripe_currency;
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
            bail!(
                "config key api.stripe_currency must be a lower-case ISO 4217 code such as \"usd\" (got {currency:?})"
            );
        }
        if !(1..=100).contains(&self.database_max_connections) {
            bail!("config key api.database_max_connections must be between 1 and 100");
        }
        if !(10..=60_000).contains(&self.database_acquire_timeout_ms) {
            bail!("config key api.database_acquire_timeout_ms must be between 10 and 60000");
        }
        if self.max_concurrent_requests == 0 {
            bail!("config key api.max_concurrent_requests must be at least 1");
        }
        if self.rate_limit_per_second == 0 || self.rate_limit_burst == 0 {
            bail!("config keys api.rate_limit_per_second and api.rate_limit_burst must be at least 1");
        }
        if self.dev_login {
            if !http.is_loopback() {
                bail!(
                    "config key api.dev_login is true but http.address ({}) is not a loopback address: \
                     anyone reaching it could sign in as the demo user",
                    http.address
                );
            }
            if !self.enabled || self.jwt_algorithm != JwtAlgorithm::Hs256 {
                bail!("config key api.dev_login needs api.enabled = true and api.jwt_algorithm = \"HS256\" (the server signs the demo user's token with api.jwt_key)");
            }
        }
        if self.enabled {
            if self.jwt_key.expose().is_empty() {
                bail!("config key api.jwt_key must be set when api.enabled is true");
            }
            let len = self.jwt_key.expose().len();
            if self.jwt_algorithm == JwtAlgorithm::Hs256 && len < MIN_HS256_KEY_BYTES {
                bail!(
                    "config key api.jwt_key is {len} bytes; an HS256 key must be at least {MIN_HS256_KEY_BYTES} bytes \
                     (as long as its SHA-256 hash) or it can be guessed offline from any one token"
                );
            }
            if self.jwt_issuer.is_empty() || self.jwt_audience.is_empty() {
                bail!("config keys api.jwt_issuer and api.jwt_audience must be set when api.enabled is true");
            }
        }
        Ok(())
    }
}

/// Rewarded ads: what a confirmed view earns, and the callback's key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdsConfig {
    /// Ad types whose completed, confirmed views earn talk time.
    pub rewarded_types: Vec<String>,
    /// Talk time one rewarded view earns (a whole number of minutes).
    pub reward_seconds: u32,
    /// Most earned seconds per user and local day (`personas.timezone`).
    pub daily_reward_cap: u32,
    /// Days an earned card stays valid (0: no expiry).
    pub reward_validity_days: u32,
    /// The ad server's callback HMAC key; empty refuses every callback.
    pub callback_secret: Secret,
    /// How old a callback signature's timestamp may be.
    pub callback_tolerance_seconds: u64,
}

impl Default for AdsConfig {
    fn default() -> Self {
        AdsConfig {
            rewarded_types: vec!["rewarded_video".into()],
            reward_seconds: 300,
            daily_reward_cap: 1800,
            reward_validity_days: 30,
            callback_secret: Secret::default(),
            callback_tolerance_seconds: 300,
        }
    }
}

impl AdsConfig {
    pub(super) fn validate(&self) -> Result<()> {
        let r = self.reward_seconds;
        if r == 0 || !r.is_multiple_of(60) || r > 86_400 {
            bail!(
                "config key ads.reward_seconds must be a whole number of minutes from 60 to 86400 (got {r}): earned cards hold minutes"
            );
        }
        if self.daily_reward_cap > 86_400 {
            bail!("config key ads.daily_reward_cap must be at most 86400 seconds (got {})", self.daily_reward_cap);
        }
        if let Some(t) = self.rewarded_types.iter().find(|t| {
            t.is_empty()
                || t.len() > 32
                || !t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        }) {
            bail!("config key ads.rewarded_types: {t:?} is not an ad type (1 to 32 of a-z, 0-9, _ and -)");
        }
        if self.callback_tolerance_seconds == 0 {
            bail!("config key ads.callback_tolerance_seconds must be positive");
        }
        Ok(())
    }
}
