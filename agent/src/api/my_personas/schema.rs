//! The request bodies of `/v1/me/personas` as the OpenAPI document shows
//! them. Documentation only: the handlers decode a body as `PersonaConfig`
//! does (through the personas crate), so every error names the field, and
//! these types only tell clients (and schemathesis) what a valid body looks
//! like. A test keeps the listed tools and fields equal to the crate's.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// How a persona sounds.
#[derive(ToSchema)]
#[schema(as = PersonaVoice)]
#[allow(dead_code)] // documents the body only (see NewPersona)
pub struct VoiceDoc {
    /// The text-to-speech profile, not blank.
    #[schema(pattern = "\\S")]
    pub tts: String,
    /// The provider's voice or style, not blank.
    #[schema(pattern = "\\S")]
    pub style: String,
}

/// The lowest subscription level that may use the persona.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = PersonaAccessLevel)]
#[allow(dead_code)] // documents the body only
pub enum LevelDoc {
    Free,
    Basic,
    Premium,
}

/// A built-in tool (`personas::validate::KNOWN_TOOLS`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = PersonaTool)]
#[allow(dead_code)] // documents the body only
pub enum ToolDoc {
    Calculator,
    GetBalance,
    NoteTaking,
    Timer,
    WebSearch,
}

/// A field users may override per session (`personas::validate::CUSTOMIZABLE_FIELDS`).
#[derive(Serialize, ToSchema)]
#[schema(as = PersonaCustomizableField)]
#[allow(dead_code)] // documents the body only
pub enum CustomizableDoc {
    #[serde(rename = "name")]
    Name,
    #[serde(rename = "summary")]
    Summary,
    #[serde(rename = "persona")]
    Persona,
    #[serde(rename = "voice.tts")]
    VoiceTts,
    #[serde(rename = "voice.style")]
    VoiceStyle,
    #[serde(rename = "content_filters")]
    ContentFilters,
}

/// A new custom persona: the `PersonaConfig` fields its owner writes (every
/// one but `created_by`, `created_at`, `usage_count` and `rating`, which the
/// server sets). Each field is checked as `PersonaConfig` checks it; an
/// error names the field. No text may hold a NUL character.
#[derive(ToSchema)]
#[allow(dead_code)] // documents the body; the handler decodes it as PersonaConfig, so errors name the field
pub struct NewPersona {
    #[schema(pattern = "\\S", example = "My Coach")]
    pub name: String,
    /// `a-z`, `0-9` and single hyphens, at most 64; not a built-in persona's slug.
    #[schema(min_length = 1, max_length = 64, pattern = "^[a-z0-9]+(-[a-z0-9]+)*$", example = "my-coach")]
    pub slug: String,
    #[schema(pattern = "\\S")]
    pub summary: String,
    #[schema(pattern = "\\S")]
    pub category: String,
    pub access_level: LevelDoc,
    #[schema(pattern = "\\S")]
    pub persona: String,
    #[schema(pattern = "\\S")]
    pub purpose: String,
    #[schema(pattern = "\\S")]
    pub system_prompt: String,
    pub voice: VoiceDoc,
    pub tools: Vec<ToolDoc>,
    #[schema(value_type = Vec<Object>)]
    pub custom_tools: Vec<Value>,
    #[schema(pattern = "\\S")]
    pub safety: String,
    /// Filter names, none blank.
    pub content_filters: Vec<String>,
    /// Minimum age in years.
    #[schema(minimum = 1, maximum = 120)]
    pub age_restriction: Option<i32>,
    #[schema(pattern = "\\S", example = "1.0.0")]
    pub version: String,
    /// Whether sessions may use it (default true).
    pub is_active: Option<bool>,
    /// At most three decimals, and at least `personas.custom_min_multiplier` (1.0 by default).
    #[schema(minimum = 1.0, maximum = 1000.0, multiple_of = 0.001, example = 1.5)]
    pub base_cost_multiplier: f64,
    /// Minutes.
    #[schema(minimum = 1)]
    pub session_time_limit: Option<i32>,
    /// Minutes for premium users, longer than `session_time_limit`; only
    /// with `premium_session_time_limit` in `premium_features`.
    #[schema(minimum = 2)]
    pub premium_session_time_limit: Option<i32>,
    /// Minutes per day.
    #[schema(minimum = 1)]
    pub daily_usage_limit: Option<i32>,
    pub ad_supported: bool,
    /// What only premium users get: tools from `tools`, fields from
    /// `user_customizable_fields`, or `premium_session_time_limit`.
    pub premium_features: Vec<String>,
    pub user_customizable_fields: Vec<CustomizableDoc>,
}

/// Changes to a custom persona: any owner-written field of [`NewPersona`]
/// (`slug` only if unchanged), replacing the stored value; the result is
/// checked as a whole. `is_active` retires or restores it. Its schema is
/// [`NewPersona`]'s without `slug` and with no field required, so the two
/// cannot drift apart.
pub struct PersonaPatch;

impl PartialSchema for PersonaPatch {
    fn schema() -> RefOr<Schema> {
        let mut schema = NewPersona::schema();
        if let RefOr::T(Schema::Object(object)) = &mut schema {
            object.properties.remove("slug");
            object.required.clear();
            object.description = Some(
                "Changes to a custom persona: any owner-written field of [`NewPersona`]\n\
                 (`slug` only if unchanged), replacing the stored value; the result is\n\
                 checked as a whole. `is_active` retires or restores it."
                    .to_string(),
            );
        }
        schema
    }
}

impl ToSchema for PersonaPatch {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("PersonaPatch")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        NewPersona::schemas(schemas);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_tools_and_fields_are_the_ones_the_personas_crate_accepts() {
        use CustomizableDoc as C;
        use ToolDoc as T;
        let names = |values: Vec<Value>| -> Vec<String> {
            values.into_iter().map(|v| v.as_str().unwrap().to_string()).collect()
        };
        let tools = [T::Calculator, T::GetBalance, T::NoteTaking, T::Timer, T::WebSearch];
        let tools = names(tools.iter().map(|t| serde_json::to_value(t).unwrap()).collect());
        assert_eq!(tools, personas::validate::KNOWN_TOOLS);
        let fields = [C::Name, C::Summary, C::Persona, C::VoiceTts, C::VoiceStyle, C::ContentFilters];
        let fields = names(fields.iter().map(|f| serde_json::to_value(f).unwrap()).collect());
        assert_eq!(fields, personas::validate::CUSTOMIZABLE_FIELDS);
        let levels = [LevelDoc::Free, LevelDoc::Basic, LevelDoc::Premium];
        for level in levels {
            let text = serde_json::to_value(level).unwrap();
            serde_json::from_value::<personas::AccessLevel>(text).unwrap();
        }
    }
}
