//! `[http]`: the operator endpoints' addresses, the `/metrics` token and the
//! server's limits. A public address needs `/metrics` kept apart or behind a
//! token.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Result};
use serde::Deserialize;

use super::Secret;

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

    /// Whether `address` is a loopback socket address.
    pub(super) fn is_loopback(&self) -> bool {
        self.address.parse::<SocketAddr>().is_ok_and(|s| s.ip().is_loopback())
    }

    pub(super) fn validate(&self) -> Result<()> {
        let address: SocketAddr = self.address.parse().map_err(|_| {
            anyhow::anyhow!("config key http.address must be host:port with an IP address (got {:?})", self.address)
        })?;
        if !self.metrics_address.is_empty() {
            let metrics: SocketAddr = self.metrics_address.parse().map_err(|_| {
                anyhow::anyhow!(
                    "config key http.metrics_address must be empty or host:port with an IP address (got {:?})",
                    self.metrics_address
                )
            })?;
            if metrics == address && metrics.port() != 0 {
                bail!("config key http.metrics_address must differ from http.address (both {address})");
            }
        }
        if !address.ip().is_loopback() && self.metrics_address.is_empty() && self.metrics_token.expose().is_empty() {
            bail!(
                "config keys http.metrics_address or http.metrics_token must be set when http.address ({address}) \
                 is not a loopback address: /metrics would be open to anyone who reaches it"
            );
        }
        if self.max_connections == 0 {
            bail!("config key http.max_connections must be at least 1");
        }
        for (key, ms) in [
            ("http.header_read_timeout_ms", self.header_read_timeout_ms),
            ("http.body_read_timeout_ms", self.body_read_timeout_ms),
            ("http.request_timeout_ms", self.request_timeout_ms),
        ] {
            if !(100..=600_000).contains(&ms) {
                bail!("config key {key} must be between 100 and 600000 (got {ms})");
            }
        }
        Ok(())
    }
}
