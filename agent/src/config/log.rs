//! `[log]`: the log lines' format and the tracing filter.

use anyhow::Result;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `mindbot_agent=debug,info`.
    pub level: String,
}

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `text`: for people.
    Text,
    /// `json`: one object per line, for collectors.
    Json,
}

impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let given = String::deserialize(d)?;
        super::one_of("log.format", &[("text", LogFormat::Text), ("json", LogFormat::Json)], &given)
    }
}

impl LogConfig {
    pub(super) fn validate(&self) -> Result<()> {
        tracing_subscriber::EnvFilter::try_new(&self.level)
            .map_err(|e| anyhow::anyhow!("config key log.level {:?} is not a tracing filter: {e}", self.level))?;
        Ok(())
    }
}
