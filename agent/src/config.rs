//! The worker's configuration: one typed struct, read from `config.toml` and
//! then from the environment, validated before anything starts.
//!
//! Environment overrides: `DATABASE_URL`, `LIVEKIT_URL`, `LIVEKIT_API_KEY`
//! and `LIVEKIT_API_SECRET` (as LiveKit's own tools name them), and
//! `MINDBOT_<SECTION>_<KEY>` for every other key, e.g.
//! `MINDBOT_METER_TICK_INTERVAL_MS=500`. A bad value stops start-up with a
//! message naming the key. Secrets never appear in `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// A value that must never be logged.
#[derive(Clone, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// Everything the worker can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database: DatabaseConfig,
    pub livekit: LivekitConfig,
    pub worker: WorkerSettings,
    pub http: HttpConfig,
    pub meter: MeterSettings,
    pub cards: CardSettings,
    pub personas: PersonaSettings,
    pub api: ApiConfig,
    /// Absent from a config file: the defaults (see `config.toml`).
    #[serde(default)]
    pub ads: AdsConfig,
    pub log: LogConfig,
    /// Absent from a config file: the defaults (voice off).
    #[serde(default)]
    pub voice: VoiceConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/db`; the password is redacted in logs.
    pub url: Secret,
    pub max_connections: u32,
    /// Apply pending migrations when the worker starts.
    pub migrate_on_start: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LivekitConfig {
    pub url: String,
    pub api_key: String,
    pub api_secret: Secret,
    /// The agent name jobs are dispatched to.
    pub agent_name: String,
    /// Where the server API (hang-up calls) is reached; empty means `url`.
    pub server_api_url: String,
}

impl LivekitConfig {
    /// The address of the server API: `server_api_url`, or `url`.
    pub fn server_api(&self) -> &str {
        if self.server_api_url.is_empty() {
            &self.url
        } else {
            &self.server_api_url
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Sessions this worker runs at once.
    pub max_jobs: u32,
    /// After SIGTERM, running sessions may go on this long, then end (`shutdown`).
    pub drain_timeout_seconds: u64,
    /// A user who leaves has this long to come back before the session ends (`user_left`).
    pub user_grace_seconds: u64,
    /// How long the agent waits for the user to be in the room.
    pub user_wait_seconds: u64,
    /// Balance updates go to the user at least this often.
    pub balance_update_seconds: u64,
    /// `remove_participant` or `delete_room`, when the balance runs out or a limit is reached.
    pub hangup: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Where `/metrics`, `/healthz`, `/readyz` (and `/v1`) are served (`host:port`).
    pub address: String,
    /// `/metrics` alone on this `host:port`; empty: on `address`.
    pub metrics_address: String,
    /// The bearer token `/metrics` requires; empty: none.
    pub metrics_token: Secret,
    /// Connections served at once per listener.
    pub max_connections: u32,
    /// A request's header must arrive within this, or the connection closes.
    pub header_read_timeout_ms: u64,
    /// Longest pause between two chunks of a request body.
    pub body_read_timeout_ms: u64,
    /// Longest time from a request's header to its answer.
    pub request_timeout_ms: u64,
    /// The web app's built directory served at `/`; empty: not served.
    pub web_root: String,
}

impl HttpConfig {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterSettings {
    pub tick_interval_ms: u64,
    pub warnings_seconds: Vec<u64>,
    pub db_grace_seconds: u64,
    pub write_timeout_ms: u64,
    pub heartbeat_timeout_seconds: u64,
    pub reap_interval_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardSettings {
    /// Days an activated card stays valid; 0 means it never expires.
    pub validity_days: u32,
    pub activation_max_failures: u32,
    pub activation_window_minutes: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonaSettings {
    /// Persona used when a job names none.
    pub default: String,
    /// Time zone in which "today" is counted for daily usage limits.
    pub timezone: String,
    /// The least multiplier a custom persona may charge, exact decimal text (`"1.0"`).
    pub custom_min_multiplier: String,
    /// Subscription plan id to access level (`free`, `basic`, `premium`).
    pub plan_levels: BTreeMap<String, String>,
}

/// The public HTTP API under `/v1` (see `config.toml` for each key).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Serve `/v1` beside the operator endpoints.
    pub enabled: bool,
    /// `HS256`, `RS256` or `ES256`: the only algorithm end-user tokens may use.
    pub jwt_algorithm: String,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `mindbot_agent=debug,info`.
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceConfig {
    pub enabled: bool,
    pub greet: bool,
    pub speak_warnings: bool,
    /// The goodbye starts this long before the balance runs out (0: none).
    pub goodbye_lead_seconds: u64,
    /// Frames louder than this (dB full scale) may be speech.
    pub speech_dbfs: f64,
    /// Speech stands this far (dB) above the noise floor (0: no floor).
    pub noise_margin_db: f64,
    pub speech_start_ms: u64,
    /// How a turn's end is decided.
    pub turn_detection: TurnDetection,
    /// Quiet after which the turn so far is transcribed and judged.
    pub turn_pause_ms: u64,
    /// Quiet that ends a turn (`silence` mode, or when judging failed).
    pub end_of_turn_ms: u64,
    /// Quiet that ends a turn whose words trail off ("and", "um").
    pub trailing_end_of_turn_ms: u64,
    /// Speech over the agent shorter than this pauses it; longer stops it.
    pub interruption_ms: u64,
    pub max_turn_seconds: u64,
    pub history_turns: usize,
    pub stt: SttConfig,
    pub llm: LlmConfig,
    /// Text to speech profiles by name (a persona's `voice.tts`); `default` is the fallback.
    pub tts: BTreeMap<String, TtsProfile>,
    /// Provider prices by provider name, for the usage report (none: cost 0).
    #[serde(default)]
    pub prices: BTreeMap<String, ProviderPrices>,
}

/// How the end of a user's turn is decided (`voice.turn_detection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnDetection {
    /// A fixed quiet (`end_of_turn_ms`).
    Silence,
    /// The turn so far is transcribed at the first pause and judged by its ending.
    Transcript,
}

impl<'de> Deserialize<'de> for TurnDetection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "silence" => Ok(TurnDetection::Silence),
            "transcript" => Ok(TurnDetection::Transcript),
            other => Err(serde::de::Error::custom(format!(
                "config key voice.turn_detection must be \"transcript\" or \"silence\" (got {other:?})"
            ))),
        }
    }
}

impl Default for VoiceConfig {
    /// `config.toml`'s `[voice]`, switched off: a config file written before
    /// voice was on by default does not start calling the local stack.
    fn default() -> Self {
        let mut defaults: toml::Table = DEFAULT_TOML.parse().expect("built-in config.toml parses");
        let voice: VoiceConfig = defaults
            .remove("voice")
            .expect("config.toml has [voice]")
            .try_into()
            .expect("[voice] defaults deserialize");
        VoiceConfig { enabled: false, ..voice }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SttConfig {
    /// A name for metrics (`mindbot_voice_errors_total{provider}`).
    pub provider: String,
    pub base_url: String,
    pub model: String,
    pub api_key: Secret,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    pub provider: String,
    pub base_url: String,
    pub model: String,
    pub api_key: Secret,
    /// Until the first streamed token.
    pub timeout_ms: u64,
    pub max_tokens: u32,
    /// Whether the personas' tools are offered (a small local model cannot
    /// call them); a config file without the key offers them, as before.
    #[serde(default = "offer_tools")]
    pub tools: bool,
}

fn offer_tools() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtsProfile {
    pub base_url: String,
    pub model: String,
    pub api_key: Secret,
    pub timeout_ms: u64,
    /// Persona `voice.style` to the provider's voice name.
    #[serde(default)]
    pub voices: BTreeMap<String, String>,
}

/// What one provider charges, in integer micro-units of the currency
/// (1 = 0.000001): per second of audio transcribed, per 1000 prompt or
/// completion tokens, per 1000 characters spoken. A missing key is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderPrices {
    pub stt_micros_per_second: i64,
    pub llm_prompt_micros_per_1k_tokens: i64,
    pub llm_completion_micros_per_1k_tokens: i64,
    pub tts_micros_per_1k_characters: i64,
}

impl ProviderPrices {
    /// Each price with its key name, for validation.
    fn named(&self) -> [(&'static str, i64); 4] {
        [
            ("stt_micros_per_second", self.stt_micros_per_second),
            ("llm_prompt_micros_per_1k_tokens", self.llm_prompt_micros_per_1k_tokens),
            ("llm_completion_micros_per_1k_tokens", self.llm_completion_micros_per_1k_tokens),
            ("tts_micros_per_1k_characters", self.tts_micros_per_1k_characters),
        ]
    }
}

/// The defaults, which are also the documentation: `config.toml` at the
/// repository root is this text.
pub const DEFAULT_TOML: &str = include_str!("../../config.toml");

/// The LiveKit dev server's built-in credentials (`livekit-server --dev`).
const DEV_API_KEY: &str = "devkey";
const DEV_API_SECRET: &str = "secret";

/// The shortest HS256 key accepted for end users' tokens, in bytes.
const MIN_HS256_KEY_BYTES: usize = 32;

/// Environment names that LiveKit's and PostgreSQL's tools already use.
const WELL_KNOWN_ENV: &[(&str, &str, &str)] = &[
    ("DATABASE_URL", "database", "url"),
    ("LIVEKIT_URL", "livekit", "url"),
    ("LIVEKIT_API_KEY", "livekit", "api_key"),
    ("LIVEKIT_API_SECRET", "livekit", "api_secret"),
];

impl Config {
    /// Reads `path` (or the built-in defaults when it is `None`), applies
    /// the environment, and validates.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading config file {}", p.display()))?,
            None => DEFAULT_TOML.to_string(),
        };
        Self::from_sources(&text, |k| std::env::var(k).ok())
    }

    /// Builds from TOML text and an environment lookup (a function, so tests
    /// need not touch the process environment).
    pub fn from_sources(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let mut table: toml::Table = text.parse().context("config.toml is not valid TOML")?;
        let defaults: toml::Table = DEFAULT_TOML.parse().expect("built-in config.toml parses");
        apply_env(&mut table, &defaults, &[], &env)?;
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("config: {}", e.message()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types cannot: ranges, URLs, known names.
    pub fn validate(&self) -> Result<()> {
        let url = self.database.url.expose();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!("config key database.url must be a postgres:// URL");
        }
        if self.database.max_connections == 0 {
            bail!("config key database.max_connections must be at least 1");
        }
        let lk = &self.livekit.url;
        if !["ws://", "wss://", "http://", "https://"].iter().any(|s| lk.starts_with(s)) {
            bail!("config key livekit.url must start with ws://, wss://, http:// or https:// (got {lk:?})");
        }
        let api = &self.livekit.server_api_url;
        if !api.is_empty() && !["ws://", "wss://", "http://", "https://"].iter().any(|s| api.starts_with(s)) {
            bail!("config key livekit.server_api_url must be empty or start with ws://, wss://, http:// or https:// (got {api:?})");
        }
        if self.livekit.api_key.is_empty() || self.livekit.api_secret.expose().is_empty() {
            bail!("config keys livekit.api_key and livekit.api_secret must not be empty");
        }
        if self.livekit.agent_name.trim().is_empty() {
            bail!("config key livekit.agent_name must not be empty");
        }
        let w = &self.worker;
        if w.max_jobs == 0 {
            bail!("config key worker.max_jobs must be at least 1");
        }
        if w.balance_update_seconds == 0 || w.user_wait_seconds == 0 {
            bail!("config keys worker.balance_update_seconds and worker.user_wait_seconds must be positive");
        }
        if !["remove_participant", "delete_room"].contains(&w.hangup.as_str()) {
            bail!("config key worker.hangup must be \"remove_participant\" or \"delete_room\" (got {:?})", w.hangup);
        }
        self.validate_http()?;
        self.refuse_dev_credentials()?;
        let m = &self.meter;
        if !(100..=10_000).contains(&m.tick_interval_ms) {
            bail!("config key meter.tick_interval_ms must be between 100 and 10000 (got {})", m.tick_interval_ms);
        }
        if m.warnings_seconds.contains(&0) {
            bail!("config key meter.warnings_seconds must hold positive numbers of seconds");
        }
        if m.write_timeout_ms == 0 || m.reap_interval_seconds == 0 {
            bail!("config keys meter.write_timeout_ms and meter.reap_interval_seconds must be positive");
        }
        if m.heartbeat_timeout_seconds * 1000 < m.tick_interval_ms * 3 {
            bail!("config key meter.heartbeat_timeout_seconds must be at least three tick intervals");
        }
        if self.cards.activation_max_failures == 0 || self.cards.activation_window_minutes == 0 {
            bail!("config keys cards.activation_max_failures and cards.activation_window_minutes must be positive");
        }
        personas::validate::check_slug(&self.personas.default)
            .map_err(|e| anyhow::anyhow!("config key personas.default: {e}"))?;
        self.timezone()?;
        self.custom_rules()?;
        self.plan_levels()?;
        self.validate_api()?;
        self.validate_ads()?;
        if !["text", "json"].contains(&self.log.format.as_str()) {
            bail!("config key log.format must be \"text\" or \"json\" (got {:?})", self.log.format);
        }
        self.validate_voice()?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| anyhow::anyhow!("config key log.level {:?} is not a tracing filter: {e}", self.log.level))?;
        Ok(())
    }

    fn validate_ads(&self) -> Result<()> {
        let a = &self.ads;
        if a.reward_seconds == 0 || !a.reward_seconds.is_multiple_of(60) || a.reward_seconds > 86_400 {
            bail!(
                "config key ads.reward_seconds must be a whole number of minutes from 60 to 86400 (got {}): earned cards hold minutes",
                a.reward_seconds
            );
        }
        if a.daily_reward_cap > 86_400 {
            bail!("config key ads.daily_reward_cap must be at most 86400 seconds (got {})", a.daily_reward_cap);
        }
        if let Some(t) = a.rewarded_types.iter().find(|t| {
            t.is_empty()
                || t.len() > 32
                || !t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        }) {
            bail!("config key ads.rewarded_types: {t:?} is not an ad type (1 to 32 of a-z, 0-9, _ and -)");
        }
        if a.callback_tolerance_seconds == 0 {
            bail!("config key ads.callback_tolerance_seconds must be positive");
        }
        Ok(())
    }

    /// The reward rules for [`metering::rewards`].
    pub fn reward_policy(&self) -> metering::rewards::RewardPolicy {
        let a = &self.ads;
        metering::rewards::RewardPolicy {
            reward_seconds: a.reward_seconds as i32,
            daily_cap_seconds: a.daily_reward_cap as i32,
            validity: (a.reward_validity_days > 0).then(|| chrono::Duration::days(i64::from(a.reward_validity_days))),
            timezone: self.personas.timezone.clone(),
            rewarded_types: a.rewarded_types.clone(),
        }
    }

    fn validate_voice(&self) -> Result<()> {
        let v = &self.voice;
        for (provider, prices) in &v.prices {
            if let Some((key, price)) = prices.named().into_iter().find(|(_, p)| *p < 0) {
                bail!("config key voice.prices.{provider}.{key} must be 0 or more (got {price})");
            }
        }
        if !(-90.0..=0.0).contains(&v.speech_dbfs) {
            bail!("config key voice.speech_dbfs must be between -90 and 0 (got {})", v.speech_dbfs);
        }
        if v.speech_start_ms < 20 || v.end_of_turn_ms < 100 || v.max_turn_seconds == 0 {
            bail!("config keys voice.speech_start_ms (>= 20), voice.end_of_turn_ms (>= 100) and voice.max_turn_seconds (> 0) are out of range");
        }
        if !(0.0..=40.0).contains(&v.noise_margin_db) {
            bail!("config key voice.noise_margin_db must be between 0 and 40 (got {})", v.noise_margin_db);
        }
        if v.turn_pause_ms < 100 || v.turn_pause_ms > v.end_of_turn_ms {
            bail!(
                "config key voice.turn_pause_ms must be at least 100 and at most voice.end_of_turn_ms ({}) (got {})",
                v.end_of_turn_ms,
                v.turn_pause_ms
            );
        }
        if v.trailing_end_of_turn_ms < v.turn_pause_ms {
            bail!(
                "config key voice.trailing_end_of_turn_ms must be at least voice.turn_pause_ms ({}) (got {})",
                v.turn_pause_ms,
                v.trailing_end_of_turn_ms
            );
        }
        if v.interruption_ms < v.speech_start_ms {
            bail!(
                "config key voice.interruption_ms must be at least voice.speech_start_ms ({}) (got {})",
                v.speech_start_ms,
                v.interruption_ms
            );
        }
        let urls = [("voice.stt.base_url", &v.stt.base_url), ("voice.llm.base_url", &v.llm.base_url)];
        let profiles = v.tts.iter().map(|(name, p)| (format!("voice.tts.{name}.base_url"), &p.base_url));
        for (key, url) in urls.into_iter().map(|(k, u)| (k.to_string(), u)).chain(profiles) {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("config key {key} must be an http:// or https:// URL (got {url:?})");
            }
        }
        for (key, ms) in [("voice.stt.timeout_ms", v.stt.timeout_ms), ("voice.llm.timeout_ms", v.llm.timeout_ms)]
            .into_iter()
            .map(|(k, m)| (k.to_string(), m))
            .chain(v.tts.iter().map(|(n, p)| (format!("voice.tts.{n}.timeout_ms"), p.timeout_ms)))
        {
            if ms == 0 {
                bail!("config key {key} must be positive");
            }
        }
        if v.enabled && !v.tts.contains_key("default") {
            bail!("config key voice.tts.default is needed when voice.enabled is true");
        }
        Ok(())
    }

    fn validate_http(&self) -> Result<()> {
        let h = &self.http;
        let address: std::net::SocketAddr = h.address.parse().map_err(|_| {
            anyhow::anyhow!("config key http.address must be host:port with an IP address (got {:?})", h.address)
        })?;
        if !h.metrics_address.is_empty() {
            let metrics: std::net::SocketAddr = h.metrics_address.parse().map_err(|_| {
                anyhow::anyhow!(
                    "config key http.metrics_address must be empty or host:port with an IP address (got {:?})",
                    h.metrics_address
                )
            })?;
            if metrics == address && metrics.port() != 0 {
                bail!("config key http.metrics_address must differ from http.address (both {address})");
            }
        }
        if !address.ip().is_loopback() && h.metrics_address.is_empty() && h.metrics_token.expose().is_empty() {
            bail!(
                "config keys http.metrics_address or http.metrics_token must be set when http.address ({address}) \
                 is not a loopback address: /metrics would be open to anyone who reaches it"
            );
        }
        if h.max_connections == 0 {
            bail!("config key http.max_connections must be at least 1");
        }
        for (key, ms) in [
            ("http.header_read_timeout_ms", h.header_read_timeout_ms),
            ("http.body_read_timeout_ms", h.body_read_timeout_ms),
            ("http.request_timeout_ms", h.request_timeout_ms),
        ] {
            if !(100..=600_000).contains(&ms) {
                bail!("config key {key} must be between 100 and 600000 (got {ms})");
            }
        }
        Ok(())
    }

    /// The dev server's well-known credentials are for a LiveKit on this machine only.
    fn refuse_dev_credentials(&self) -> Result<()> {
        let lk = &self.livekit;
        if mindbot_transport::url::host_is_loopback(&lk.url) {
            return Ok(());
        }
        if lk.api_key == DEV_API_KEY {
            bail!(
                "config key livekit.api_key is the LiveKit dev server's public key {DEV_API_KEY:?}, refused because \
                 livekit.url ({}) is not a loopback address: anyone could sign tokens for it",
                lk.url
            );
        }
        if lk.api_secret.expose() == DEV_API_SECRET {
            bail!(
                "config key livekit.api_secret is the LiveKit dev server's public secret, refused because \
                 livekit.url ({}) is not a loopback address: anyone could sign tokens for it",
                lk.url
            );
        }
        Ok(())
    }

    fn validate_api(&self) -> Result<()> {
        let a = &self.api;
        if !["HS256", "RS256", "ES256"].contains(&a.jwt_algorithm.as_str()) {
            bail!("config key api.jwt_algorithm must be \"HS256\", \"RS256\" or \"ES256\" (got {:?})", a.jwt_algorithm);
        }
        if a.jwt_age_claim.trim().is_empty() {
            bail!("config key api.jwt_age_claim must not be empty");
        }
        if !a.public_livekit_url.is_empty()
            && !["ws://", "wss://", "http://", "https://"].iter().any(|s| a.public_livekit_url.starts_with(s))
        {
            bail!("config key api.public_livekit_url must start with ws://, wss://, http:// or https://");
        }
        if !(10..=86_400).contains(&a.session_token_ttl_seconds) {
            bail!("config key api.session_token_ttl_seconds must be between 10 and 86400");
        }
        if a.min_session_seconds == 0 || a.max_open_sessions == 0 || a.max_custom_personas == 0 {
            bail!(
                "config keys api.min_session_seconds, api.max_open_sessions and api.max_custom_personas must be positive"
            );
        }
        if !(1024..=10 * 1024 * 1024).contains(&a.body_limit_bytes) {
            bail!("config key api.body_limit_bytes must be between 1024 and 10485760");
        }
        if a.stripe_tolerance_seconds == 0 {
            bail!("config key api.stripe_tolerance_seconds must be positive");
        }
        if a.stripe_currency.len() != 3 || !a.stripe_currency.bytes().all(|b| b.is_ascii_lowercase()) {
            bail!(
                "config key api.stripe_currency must be a lower-case ISO 4217 code such as \"usd\" (got {:?})",
                a.stripe_currency
            );
        }
        if !(1..=100).contains(&a.database_max_connections) {
            bail!("config key api.database_max_connections must be between 1 and 100");
        }
        if !(10..=60_000).contains(&a.database_acquire_timeout_ms) {
            bail!("config key api.database_acquire_timeout_ms must be between 10 and 60000");
        }
        if a.max_concurrent_requests == 0 {
            bail!("config key api.max_concurrent_requests must be at least 1");
        }
        if a.rate_limit_per_second == 0 || a.rate_limit_burst == 0 {
            bail!("config keys api.rate_limit_per_second and api.rate_limit_burst must be at least 1");
        }
        if a.dev_login {
            let loopback = self.http.address.parse::<std::net::SocketAddr>().is_ok_and(|s| s.ip().is_loopback());
            if !loopback {
                bail!(
                    "config key api.dev_login is true but http.address ({}) is not a loopback address: \
                     anyone reaching it could sign in as the demo user",
                    self.http.address
                );
            }
            if !a.enabled || a.jwt_algorithm != "HS256" {
                bail!("config key api.dev_login needs api.enabled = true and api.jwt_algorithm = \"HS256\" (the server signs the demo user's token with api.jwt_key)");
            }
        }
        if a.enabled {
            if a.jwt_key.expose().is_empty() {
                bail!("config key api.jwt_key must be set when api.enabled is true");
            }
            let len = a.jwt_key.expose().len();
            if a.jwt_algorithm == "HS256" && len < MIN_HS256_KEY_BYTES {
                bail!(
                    "config key api.jwt_key is {len} bytes; an HS256 key must be at least {MIN_HS256_KEY_BYTES} bytes \
                     (as long as its SHA-256 hash) or it can be guessed offline from any one token"
                );
            }
            if a.jwt_issuer.is_empty() || a.jwt_audience.is_empty() {
                bail!("config keys api.jwt_issuer and api.jwt_audience must be set when api.enabled is true");
            }
        }
        Ok(())
    }

    pub fn timezone(&self) -> Result<chrono_tz::Tz> {
        self.personas.timezone.parse().map_err(|_| {
            anyhow::anyhow!("config key personas.timezone: unknown time zone {:?}", self.personas.timezone)
        })
    }

    /// The custom personas' rules, from `personas.custom_min_multiplier`.
    pub fn custom_rules(&self) -> Result<personas::CustomRules> {
        let text = &self.personas.custom_min_multiplier;
        let min_multiplier: metering::Rate =
            text.parse().map_err(|e| anyhow::anyhow!("config key personas.custom_min_multiplier: {e}"))?;
        Ok(personas::CustomRules { min_multiplier })
    }

    pub fn plan_levels(&self) -> Result<personas::PlanLevels> {
        let mut levels = Vec::new();
        for (plan, level) in &self.personas.plan_levels {
            let l: personas::AccessLevel =
                serde_json::from_value(serde_json::Value::String(level.clone())).map_err(|_| {
                    anyhow::anyhow!("config key personas.plan_levels.{plan}: unknown access level {level:?}")
                })?;
            levels.push((plan.clone(), l));
        }
        Ok(personas::PlanLevels::new(levels))
    }

    pub fn meter_config(&self, worker_id: &str) -> metering::meter::MeterConfig {
        let m = &self.meter;
        metering::meter::MeterConfig {
            tick_interval: Duration::from_millis(m.tick_interval_ms),
            warnings: m.warnings_seconds.iter().map(|s| Duration::from_secs(*s)).collect(),
            db_grace: Duration::from_secs(m.db_grace_seconds),
            write_timeout: Duration::from_millis(m.write_timeout_ms),
            heartbeat_timeout: Duration::from_secs(m.heartbeat_timeout_seconds),
            reap_interval: Duration::from_secs(m.reap_interval_seconds),
            worker_id: worker_id.to_string(),
            clock: metering::meter::Clock::system(),
        }
    }

    pub fn activation_policy(&self) -> metering::cards::ActivationPolicy {
        let c = &self.cards;
        metering::cards::ActivationPolicy {
            validity: (c.validity_days > 0).then(|| chrono::Duration::days(i64::from(c.validity_days))),
            max_failures: i64::from(c.activation_max_failures),
            window: chrono::Duration::minutes(i64::from(c.activation_window_minutes)),
        }
    }
}

/// Overrides keys of `table` from the environment, for every key the
/// defaults have: `MINDBOT_<PATH>` with the key path joined by `_` and upper
/// cased (`voice.tts.default.base_url` is `MINDBOT_VOICE_TTS_DEFAULT_BASE_URL`),
/// or a well-known name. A table key can be set whole (as an inline TOML
/// table) or key by key.
fn apply_env(
    table: &mut toml::Table,
    defaults: &toml::Table,
    path: &[&str],
    env: &impl Fn(&str) -> Option<String>,
) -> Result<()> {
    for (key, default) in defaults {
        let mut here = path.to_vec();
        here.push(key);
        let dotted = here.join(".");
        if path.is_empty() && !default.is_table() {
            continue;
        }
        if !path.is_empty() {
            let prefixed = format!("MINDBOT_{}", here.join("_").to_uppercase());
            let well_known = match here.as_slice() {
                [section, key] => WELL_KNOWN_ENV.iter().find(|(_, s, k)| s == section && k == key).map(|(e, _, _)| *e),
                _ => None,
            };
            let found = env(&prefixed).map(|v| (prefixed.clone(), v));
            if let Some((var, raw)) = found.or_else(|| well_known.and_then(|e| env(e).map(|v| (e.to_string(), v)))) {
                let value = env_value(&raw, default)
                    .with_context(|| format!("environment variable {var} (config key {dotted})"))?;
                table.insert(key.clone(), value);
            }
        }
        if let Some(sub_defaults) = default.as_table() {
            let existed = table.contains_key(key);
            let mut sub = match table.get(key) {
                None => toml::Table::new(),
                Some(toml::Value::Table(t)) => t.clone(),
                Some(_) => bail!("config key {dotted} must be a table"),
            };
            apply_env(&mut sub, sub_defaults, &here, env)?;
            if existed || !sub.is_empty() {
                table.insert(key.clone(), toml::Value::Table(sub));
            }
        }
    }
    Ok(())
}

/// An environment value typed like the default it replaces: a string stays
/// a string; numbers, booleans, arrays and tables are parsed as TOML values
/// and must have the default's type.
fn env_value(raw: &str, default: &toml::Value) -> Result<toml::Value> {
    if default.is_str() {
        return Ok(toml::Value::String(raw.to_string()));
    }
    let parsed = format!("v = {raw}").parse::<toml::Table>().ok().and_then(|mut t| t.remove("v"));
    match parsed {
        Some(v) if v.type_str() == default.type_str() => Ok(v),
        _ => bail!("expected {}, got {raw:?}", default.type_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    fn env_of(pairs: Vec<(&'static str, &'static str)>) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn defaults_load_and_validate() {
        let c = Config::from_sources(DEFAULT_TOML, env(&[])).unwrap();
        assert_eq!(c.livekit.agent_name, "mindbot");
        assert_eq!(c.meter.warnings_seconds, vec![60, 10]);
        assert_eq!(c.custom_rules().unwrap().min_multiplier, metering::Rate::ONE);
        let c = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_PERSONAS_CUSTOM_MIN_MULTIPLIER", "1.25")])).unwrap();
        assert_eq!(c.custom_rules().unwrap().min_multiplier.ms_per_second(), 1250);
    }

    #[test]
    fn environment_overrides_with_well_known_and_prefixed_names() {
        let c = Config::from_sources(
            DEFAULT_TOML,
            env(&[
                ("DATABASE_URL", "postgres://a:b@db:5432/x"),
                ("LIVEKIT_API_SECRET", "s3cr3t"),
                ("MINDBOT_METER_TICK_INTERVAL_MS", "500"),
                ("MINDBOT_METER_WARNINGS_SECONDS", "[120, 30]"),
            ]),
        )
        .unwrap();
        assert_eq!(c.database.url.expose(), "postgres://a:b@db:5432/x");
        assert_eq!(c.meter.tick_interval_ms, 500);
        assert_eq!(c.meter.warnings_seconds, vec![120, 30]);
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t") && !shown.contains("a:b@"), "{shown}");
    }

    #[test]
    fn ads_settings_are_validated_naming_the_key() {
        let c = Config::from_sources(DEFAULT_TOML, env(&[])).unwrap();
        let p = c.reward_policy();
        assert_eq!((p.reward_seconds, p.daily_cap_seconds, p.rewarded_types.len()), (300, 1800, 1));
        for (key, value, named) in [
            ("MINDBOT_ADS_REWARD_SECONDS", "90", "ads.reward_seconds"),
            ("MINDBOT_ADS_REWARD_SECONDS", "0", "ads.reward_seconds"),
            ("MINDBOT_ADS_DAILY_REWARD_CAP", "100000", "ads.daily_reward_cap"),
            ("MINDBOT_ADS_REWARDED_TYPES", r#"["Rewarded Video"]"#, "ads.rewarded_types"),
            ("MINDBOT_ADS_CALLBACK_TOLERANCE_SECONDS", "0", "ads.callback_tolerance_seconds"),
        ] {
            let e = Config::from_sources(DEFAULT_TOML, |k: &str| (k == key).then(|| value.to_string())).unwrap_err();
            assert!(e.to_string().contains(named), "{key}={value}: {e}");
        }
        // A config file without an [ads] table gets the defaults.
        let without: String = DEFAULT_TOML.split("[ads]").next().unwrap().to_string()
            + &DEFAULT_TOML[DEFAULT_TOML.find("[log]").unwrap()..];
        let c = Config::from_sources(&without, env(&[])).unwrap();
        assert_eq!(c.ads.reward_seconds, 300);
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_METER_TICK_INTERVAL_MS", "fast")])).unwrap_err();
        assert!(e.to_string().contains("tick_interval_ms"), "{e}");
        let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_PERSONAS_TIMEZONE", "Mars/Olympus")])).unwrap_err();
        assert!(e.to_string().contains("personas.timezone"), "{e}");
        for bad in ["0", "-1", "0.0001", "cheap", "1e3"] {
            let e = Config::from_sources(DEFAULT_TOML, |k: &str| {
                (k == "MINDBOT_PERSONAS_CUSTOM_MIN_MULTIPLIER").then(|| bad.to_string())
            })
            .unwrap_err();
            assert!(e.to_string().contains("personas.custom_min_multiplier"), "{bad}: {e}");
        }
        let e = Config::from_sources(DEFAULT_TOML, env(&[("LIVEKIT_URL", "ftp://x")])).unwrap_err();
        assert!(e.to_string().contains("livekit.url"), "{e}");
        let e =
            Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_LIVEKIT_SERVER_API_URL", "127.0.0.1:1")])).unwrap_err();
        assert!(e.to_string().contains("livekit.server_api_url"), "{e}");
        let typo = DEFAULT_TOML.replace("[meter]", "[meter]\ntick_intervall_ms = 3");
        let e = Config::from_sources(&typo, env(&[])).unwrap_err();
        assert!(e.to_string().contains("tick_intervall_ms"), "{e}");
        let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_LOG_FORMAT", "xml")])).unwrap_err();
        assert!(e.to_string().contains("log.format"), "{e}");
        let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_VOICE_STT_BASE_URL", "ftp://x")])).unwrap_err();
        assert!(e.to_string().contains("voice.stt.base_url"), "{e}");
        let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_VOICE_LLM_TIMEOUT_MS", "soon")])).unwrap_err();
        assert!(e.to_string().contains("voice.llm.timeout_ms"), "{e}");
        let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_API_STRIPE_CURRENCY", "US$")])).unwrap_err();
        assert!(e.to_string().contains("api.stripe_currency") && e.to_string().contains("US$"), "{e}");
    }

    #[test]
    fn voice_keys_nest_in_the_environment_and_keys_stay_secret() {
        let c = Config::from_sources(
            DEFAULT_TOML,
            env(&[
                ("MINDBOT_VOICE_ENABLED", "true"),
                ("MINDBOT_VOICE_LLM_API_KEY", "sk-hidden"),
                ("MINDBOT_VOICE_TTS_DEFAULT_BASE_URL", "http://127.0.0.1:9"),
                ("MINDBOT_VOICE_TTS_DEFAULT_VOICES", r#"{ "warm-mature-female" = "en-us+f2" }"#),
                ("MINDBOT_PERSONAS_PLAN_LEVELS", r#"{ gold = "premium" }"#),
            ]),
        )
        .unwrap();
        assert!(c.voice.enabled);
        assert_eq!(c.voice.llm.api_key.expose(), "sk-hidden");
        assert_eq!(c.voice.tts["default"].base_url, "http://127.0.0.1:9");
        assert_eq!(c.voice.tts["default"].voices["warm-mature-female"], "en-us+f2");
        assert_eq!(c.personas.plan_levels.len(), 1);
        assert!(!format!("{c:?}").contains("sk-hidden"));
        let no_default = DEFAULT_TOML.replace("[voice.tts.default]", "[voice.tts.cartesia]");
        let e = Config::from_sources(&no_default, env(&[("MINDBOT_VOICE_ENABLED", "true")])).unwrap_err();
        assert!(e.to_string().contains("voice.tts.default"), "{e}");
        // A config file without [voice] gets the defaults: voice off.
        let start = DEFAULT_TOML.find("[voice]").unwrap();
        let c = Config::from_sources(&DEFAULT_TOML[..start], env(&[])).unwrap();
        assert!(!c.voice.enabled);
    }

    #[test]
    fn provider_prices_are_integers_per_provider_and_a_misspelt_key_is_named() {
        let c = Config::from_sources(
            DEFAULT_TOML,
            env(&[
                ("MINDBOT_VOICE_PRICES_LOCAL_STT_MICROS_PER_SECOND", "100"),
                ("MINDBOT_VOICE_PRICES", r#"{ openai = { llm_prompt_micros_per_1k_tokens = 150 } }"#),
            ]),
        );
        // A whole table from the environment replaces the file's.
        let c = c.unwrap();
        assert_eq!(c.voice.prices["openai"].llm_prompt_micros_per_1k_tokens, 150);
        assert_eq!(c.voice.prices["openai"].stt_micros_per_second, 0, "a missing key is 0");
        let c = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_VOICE_PRICES_LOCAL_STT_MICROS_PER_SECOND", "100")]))
            .unwrap();
        assert_eq!(c.voice.prices["local"].stt_micros_per_second, 100);
        let typo = format!("{DEFAULT_TOML}\n[voice.prices.openai]\nstt_micro_per_second = 5\n");
        let e = format!("{:#}", Config::from_sources(&typo, env(&[])).unwrap_err());
        assert!(e.contains("stt_micro_per_second"), "{e}");
        let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_VOICE_PRICES_LOCAL_STT_MICROS_PER_SECOND", "-1")]))
            .unwrap_err();
        assert!(format!("{e:#}").contains("stt_micros_per_second"), "{e:#}");
    }

    #[test]
    fn turn_taking_keys_are_typed_and_checked_naming_the_key() {
        let c = Config::from_sources(DEFAULT_TOML, env(&[])).unwrap();
        assert_eq!(c.voice.turn_detection, TurnDetection::Transcript);
        let c = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_VOICE_TURN_DETECTION", "silence")])).unwrap();
        assert_eq!(c.voice.turn_detection, TurnDetection::Silence);
        let cases: [(&'static str, &'static str, &str); 5] = [
            ("MINDBOT_VOICE_TURN_DETECTION", "model", "turn_detection"),
            ("MINDBOT_VOICE_TURN_PAUSE_MS", "900", "voice.turn_pause_ms"),
            ("MINDBOT_VOICE_TRAILING_END_OF_TURN_MS", "100", "voice.trailing_end_of_turn_ms"),
            ("MINDBOT_VOICE_INTERRUPTION_MS", "20", "voice.interruption_ms"),
            ("MINDBOT_VOICE_NOISE_MARGIN_DB", "-3.0", "voice.noise_margin_db"),
        ];
        for (key, value, named) in cases {
            let e = Config::from_sources(DEFAULT_TOML, env_of(vec![("MINDBOT_VOICE_ENABLED", "true"), (key, value)]))
                .unwrap_err();
            assert!(format!("{e:#}").contains(named), "{key}={value}: {e:#}");
        }
    }

    #[test]
    fn an_enabled_api_needs_its_token_settings() {
        let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_API_ENABLED", "true")])).unwrap_err();
        assert!(e.to_string().contains("api.jwt_key"), "{e}");
        let e = Config::from_sources(
            DEFAULT_TOML,
            env(&[
                ("MINDBOT_API_ENABLED", "true"),
                ("MINDBOT_API_JWT_KEY", "k3y-of-thirty-two-bytes-at-least"),
                ("MINDBOT_API_JWT_ISSUER", "i"),
            ]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("api.jwt_audience"), "{e}");
        let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_API_JWT_ALGORITHM", "none")])).unwrap_err();
        assert!(e.to_string().contains("api.jwt_algorithm"), "{e}");
        let c = Config::from_sources(
            DEFAULT_TOML,
            env(&[
                ("MINDBOT_API_ENABLED", "true"),
                ("MINDBOT_API_JWT_KEY", "k3y-of-thirty-two-bytes-at-least"),
                ("MINDBOT_API_JWT_ISSUER", "i"),
                ("MINDBOT_API_JWT_AUDIENCE", "a"),
                ("MINDBOT_API_STRIPE_WEBHOOK_SECRET", "whsec_s3cr3t"),
            ]),
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("k3y") && !shown.contains("whsec_s3cr3t"), "{shown}");
    }

    #[test]
    fn a_short_hs256_key_is_refused_naming_the_key_and_the_length() {
        let e = Config::from_sources(
            DEFAULT_TOML,
            env(&[
                ("MINDBOT_API_ENABLED", "true"),
                ("MINDBOT_API_JWT_KEY", "thirty-one-bytes-is-one-too-few"),
                ("MINDBOT_API_JWT_ISSUER", "i"),
                ("MINDBOT_API_JWT_AUDIENCE", "a"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("api.jwt_key") && e.contains("31 bytes") && e.contains("at least 32 bytes"), "{e}");
        assert!(!e.contains("thirty-one"), "the key itself is never shown: {e}");
    }

    #[test]
    fn dev_credentials_are_refused_for_a_livekit_that_is_not_loopback() {
        let e = Config::from_sources(DEFAULT_TOML, env(&[("LIVEKIT_URL", "wss://lk.example.com")])).unwrap_err();
        assert!(e.to_string().contains("livekit.api_key") && e.to_string().contains("not a loopback"), "{e}");
        let e = Config::from_sources(
            DEFAULT_TOML,
            env(&[("LIVEKIT_URL", "ws://10.1.2.3:7880"), ("LIVEKIT_API_KEY", "APIk3y")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("livekit.api_secret"), "{e}");
        let c = Config::from_sources(
            DEFAULT_TOML,
            env(&[("LIVEKIT_URL", "wss://lk.example.com"), ("LIVEKIT_API_KEY", "APIk3y"), ("LIVEKIT_API_SECRET", "s")]),
        );
        assert!(c.is_ok(), "{:?}", c.err());
        assert!(Config::from_sources(DEFAULT_TOML, env(&[("LIVEKIT_URL", "ws://localhost:7880")])).is_ok());
    }

    #[test]
    fn dev_login_is_refused_unless_the_address_is_loopback_and_tokens_are_hs256() {
        let api: Vec<(&str, &str)> = vec![
            ("MINDBOT_API_ENABLED", "true"),
            ("MINDBOT_API_JWT_KEY", "a-demo-key-of-at-least-32-bytes-long"),
            ("MINDBOT_API_JWT_ISSUER", "iss"),
            ("MINDBOT_API_JWT_AUDIENCE", "aud"),
            ("MINDBOT_API_DEV_LOGIN", "true"),
        ];
        assert!(Config::from_sources(DEFAULT_TOML, env_of(api.clone())).is_ok());
        let mut public = api.clone();
        public.extend([("MINDBOT_HTTP_ADDRESS", "0.0.0.0:9464"), ("MINDBOT_HTTP_METRICS_TOKEN", "t0ken")]);
        let e = Config::from_sources(DEFAULT_TOML, env_of(public)).unwrap_err().to_string();
        assert!(e.contains("api.dev_login") && e.contains("http.address") && e.contains("loopback"), "{e}");
        let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_API_DEV_LOGIN", "true")])).unwrap_err().to_string();
        assert!(e.contains("api.dev_login") && e.contains("api.enabled"), "{e}");
    }

    #[test]
    fn public_metrics_need_their_own_address_or_a_token() {
        let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_HTTP_ADDRESS", "0.0.0.0:9464")])).unwrap_err();
        assert!(e.to_string().contains("http.metrics_token"), "{e}");
        for extra in [("MINDBOT_HTTP_METRICS_TOKEN", "t0ken"), ("MINDBOT_HTTP_METRICS_ADDRESS", "127.0.0.1:9465")] {
            let c = Config::from_sources(DEFAULT_TOML, env_of(vec![("MINDBOT_HTTP_ADDRESS", "0.0.0.0:9464"), extra]));
            assert!(c.is_ok(), "{:?}", c.err());
        }
        let e =
            Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_HTTP_METRICS_ADDRESS", "127.0.0.1:9464")])).unwrap_err();
        assert!(e.to_string().contains("http.metrics_address"), "{e}");
        let c = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_HTTP_METRICS_TOKEN", "t0ken")])).unwrap();
        assert!(!format!("{c:?}").contains("t0ken"));
        let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_HTTP_HEADER_READ_TIMEOUT_MS", "0")])).unwrap_err();
        assert!(e.to_string().contains("http.header_read_timeout_ms"), "{e}");
        let e = Config::from_sources(DEFAULT_TOML, env(&[("MINDBOT_API_RATE_LIMIT_BURST", "0")])).unwrap_err();
        assert!(e.to_string().contains("api.rate_limit_burst"), "{e}");
    }
}
