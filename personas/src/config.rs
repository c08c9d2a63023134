//! `PersonaConfig`, the seed's persona interface, as a Rust type that
//! serializes to exactly the interface's JSON: the same field names in the
//! same order, `null` for the nullable numbers, unknown fields refused.
//!
//! This module only describes the shape; the rules a persona must follow are
//! in [`crate::validate`], reading one from text or a file in [`crate::parse`].

use mindbot_schema::Rate;
use serde::{Deserialize, Serialize};

use crate::level::AccessLevel;

/// How a persona sounds: which text-to-speech provider and which of its voices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Voice {
    /// The text-to-speech provider (`cartesia`, `elevenlabs`, ...); never empty.
    pub tts: String,
    /// The provider's voice or speaking style, passed through to it as is.
    pub style: String,
}

/// One persona, field for field the seed's `PersonaConfig` interface.
///
/// Catalog TOML files cannot write `null`, so the three nullable numbers may
/// also be left out; every other field is required, as in the interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonaConfig {
    /// Display name, e.g. "Professor Ada".
    pub name: String,
    /// URL-safe identifier a session asks for (`a-z`, `0-9`, single hyphens, at most 64).
    pub slug: String,
    /// One or two sentences shown in a persona picker.
    pub summary: String,
    /// Free-form grouping for the picker (`education`, `wellness`, ...).
    pub category: String,
    /// Lowest subscription level that may use the persona.
    pub access_level: AccessLevel,

    /// Who the persona is: character and manner, in prose.
    pub persona: String,
    /// What a session with the persona is for.
    pub purpose: String,
    /// The instructions given to the language model.
    pub system_prompt: String,

    /// Text-to-speech settings.
    pub voice: Voice,

    /// Names of built-in tools the persona may call.
    pub tools: Vec<String>,
    /// Tool definitions specific to this persona, passed through untouched.
    pub custom_tools: Vec<serde_json::Value>,

    /// Safety guidance in prose, for the model and for reviewers.
    pub safety: String,
    /// Names of content filters applied to the persona's output.
    pub content_filters: Vec<String>,
    /// Minimum age in years (1 to 120), `null` when there is none.
    #[serde(default)]
    pub age_restriction: Option<i32>,

    /// Who wrote the persona (`mindbot` for the catalog, a user id for custom ones).
    pub created_by: String,
    /// When the persona was written, as RFC 3339 text (`2025-01-15T09:00:00Z`).
    pub created_at: String,
    /// The persona definition's own version, e.g. `1.2.0`.
    pub version: String,
    /// Whether the persona may be used at all.
    pub is_active: bool,
    /// How many sessions have used the persona.
    pub usage_count: u64,
    /// Mean user rating, 0 to 5 (a statistic, not money).
    pub rating: f64,

    /// Multiplier on card time per metered second (exact, at most three decimals, positive).
    pub base_cost_multiplier: Rate,
    /// Longest single session, in minutes; `null` for no cap beyond the balance.
    #[serde(default)]
    pub session_time_limit: Option<i32>,
    /// Longest single session for users with premium access, in minutes,
    /// when it is listed in `premium_features` (not in the seed's interface:
    /// absent from a persona's JSON unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub premium_session_time_limit: Option<i32>,
    /// Most minutes one user may spend with the persona per local day; `null` for none.
    #[serde(default)]
    pub daily_usage_limit: Option<i32>,
    /// Whether sessions may carry advertising.
    pub ad_supported: bool,
    /// Features only users with premium access get: tools from `tools` and
    /// fields from `user_customizable_fields` (see [`crate::premium`]).
    pub premium_features: Vec<String>,

    /// Fields a user may override per session, as dot paths (`voice.style`);
    /// only those in [`crate::validate::CUSTOMIZABLE_FIELDS`] are accepted.
    pub user_customizable_fields: Vec<String>,
}
