//! The worker's configuration: one typed struct, read from `config.toml` and
//! then from the environment, validated before anything starts.
//!
//! Environment overrides: `DATABASE_URL`, `LIVEKIT_URL`, `LIVEKIT_API_KEY`
//! and `LIVEKIT_API_SECRET` (as LiveKit's own tools name them), and
//! `MINDBOT_<SECTION>_<KEY>` for every other key, e.g.
//! `MINDBOT_METER_TICK_INTERVAL_MS=500`. A bad value stops start-up with a
//! message naming the key. Secrets never appear in `Debug` output.
//!
//! This module loads (file, environment, redaction); each section's type and
//! its own `validate` live in a file of their own: [`services`] (database,
//! LiveKit), [`worker`] (worker, meter, cards), [`http`], [`personas`],
//! [`api`] (the public API and rewarded ads), [`log`], [`voice`]. Settings
//! with a fixed set of values are enums, parsed once here with an error
//! naming the key, never compared as strings where they are used.

mod api;
mod http;
mod log;
mod personas;
mod services;
mod voice;
mod worker;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

pub use api::{AdsConfig, ApiConfig, JwtAlgorithm};
pub use http::HttpConfig;
pub use log::{LogConfig, LogFormat};
pub use personas::PersonaSettings;
pub use services::{DatabaseConfig, LivekitConfig};
pub use voice::{LlmConfig, ProviderPrices, SttConfig, TtsProfile, TurnDetection, VoiceConfig};
pub use worker::{CardSettings, HangUp, MeterSettings, WorkerSettings};

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

/// A database URL with its password removed, for messages.
pub fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}@{}", &url[..s + 3], &url[at + 1..])
        }
        _ => url.to_string(),
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

/// The defaults, which are also the documentation: `config.toml` at the
/// repository root is this text.
pub const DEFAULT_TOML: &str = include_str!("../../../config.toml");

/// Environment names that LiveKit's and PostgreSQL's tools already use.
const WELL_KNOWN_ENV: &[(&str, &str, &str)] = &[
    ("DATABASE_URL", "database", "url"),
    ("LIVEKIT_URL", "livekit", "url"),
    ("LIVEKIT_API_KEY", "livekit", "api_key"),
    ("LIVEKIT_API_SECRET", "livekit", "api_secret"),
];

/// A value of one of `allowed` (their config spellings) for `key`, or an
/// error naming the key, the values allowed and the one given.
fn one_of<T: Copy, E: serde::de::Error>(key: &str, allowed: &[(&str, T)], given: &str) -> Result<T, E> {
    if let Some((_, value)) = allowed.iter().find(|(name, _)| *name == given) {
        return Ok(*value);
    }
    let names: Vec<String> = allowed.iter().map(|(name, _)| format!("{name:?}")).collect();
    let list = match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Err(E::custom(format!("config key {key} must be {list} (got {given:?})")))
}

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
        // A typed key's own message names it already (`config key ...`).
        let config: Config = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| match e.message() {
            named if named.starts_with("config key") => anyhow::anyhow!("{named}"),
            other => anyhow::anyhow!("config: {other}"),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types cannot (ranges, URLs, names, keys that depend on
    /// each other), section by section.
    pub fn validate(&self) -> Result<()> {
        self.database.validate()?;
        self.livekit.validate()?;
        self.worker.validate()?;
        self.http.validate()?;
        self.livekit.refuse_dev_credentials()?;
        self.meter.validate()?;
        self.cards.validate()?;
        self.personas.validate()?;
        self.api.validate(&self.http)?;
        self.ads.validate()?;
        self.voice.validate()?;
        self.log.validate()?;
        Ok(())
    }

    /// The reward rules for [`metering::rewards`].
    pub fn reward_policy(&self) -> metering::rewards::RewardPolicy {
        let a = &self.ads;
        metering::rewards::RewardPolicy {
            reward_seconds: a.reward_seconds as i32,
            daily_cap_seconds: a.daily_reward_cap as i32,
            validity: (a.reward_validity_days > 0).then(|| chrono::Duration::days(i64::from(a.reward_validity_days))),
            timezone: self.personas.timezone.name().to_string(),
            rewarded_types: a.rewarded_types.clone(),
        }
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
mod tests;
