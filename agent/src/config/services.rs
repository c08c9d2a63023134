//! `[database]` and `[livekit]`: where the worker's state and its rooms are.
//! The LiveKit dev server's public credentials are refused for a server that
//! is not on this machine.

use anyhow::{bail, Result};
use serde::Deserialize;

use super::Secret;

/// The LiveKit dev server's built-in credentials (`livekit-server --dev`).
const DEV_API_KEY: &str = "devkey";
const DEV_API_SECRET: &str = "secret";

/// The schemes a LiveKit address may have (http(s) is mapped to ws(s)).
const LIVEKIT_SCHEMES: [&str; 4] = ["ws://", "wss://", "http://", "https://"];

/// Whether `url` starts with one of [`LIVEKIT_SCHEMES`].
pub(super) fn is_livekit_url(url: &str) -> bool {
    LIVEKIT_SCHEMES.iter().any(|s| url.starts_with(s))
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

impl DatabaseConfig {
    /// The pool of `max_connections` every command and the supervisor use;
    /// an error names the server with its password redacted.
    pub async fn connect(&self) -> Result<sqlx::PgPool> {
        use anyhow::Context as _;
        let url = self.url.expose();
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(url)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {}", super::redacted_url(url)))
    }

    pub(super) fn validate(&self) -> Result<()> {
        let url = self.url.expose();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!("config key database.url must be a postgres:// URL");
        }
        if self.max_connections == 0 {
            bail!("config key database.max_connections must be at least 1");
        }
        Ok(())
    }
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

    pub(super) fn validate(&self) -> Result<()> {
        let lk = &self.url;
        if !is_livekit_url(lk) {
            bail!("config key livekit.url must start with ws://, wss://, http:// or https:// (got {lk:?})");
        }
        let api = &self.server_api_url;
        if !api.is_empty() && !is_livekit_url(api) {
            bail!("config key livekit.server_api_url must be empty or start with ws://, wss://, http:// or https:// (got {api:?})");
        }
        if self.api_key.is_empty() || self.api_secret.expose().is_empty() {
            bail!("config keys livekit.api_key and livekit.api_secret must not be empty");
        }
        if self.agent_name.trim().is_empty() {
            bail!("config key livekit.agent_name must not be empty");
        }
        Ok(())
    }

    /// The dev server's well-known credentials are for a LiveKit on this machine only.
    pub(super) fn refuse_dev_credentials(&self) -> Result<()> {
        if mindbot_transport::url::host_is_loopback(&self.url) {
            return Ok(());
        }
        if self.api_key == DEV_API_KEY {
            bail!(
                "config key livekit.api_key is the LiveKit dev server's public key {DEV_API_KEY:?}, refused because \
                 livekit.url ({}) is not a loopback address: anyone could sign tokens for it",
                self.url
            );
        }
        if self.api_secret.expose() == DEV_API_SECRET {
            bail!(
                "config key livekit.api_secret is the LiveKit dev server's public secret, refused because \
                 livekit.url ({}) is not a loopback address: anyone could sign tokens for it",
                self.url
            );
        }
        Ok(())
    }
}
