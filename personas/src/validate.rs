//! The rules every persona must follow before a session may use it, checked
//! the same way for catalog files, custom personas from the database, and a
//! persona after per-session overrides. Each refusal names the field, using
//! the interface's own spelling (`voice.tts`, `tools[1]`).
//!
//! Rules the types already carry are not repeated here: an unknown
//! `access_level` or a zero or negative `base_cost_multiplier` cannot be
//! deserialized at all (see [`crate::parse`], which names the field).

use chrono::DateTime;

use crate::config::PersonaConfig;
use crate::error::PersonaError;

/// Fields a persona may let users override per session.
///
/// Only presentation: the name, blurb, character text and voice. Safety,
/// pricing, access, limits and the system prompt are never user-editable.
/// `content_filters` is listed, but an override may only add filters, never
/// drop one (see [`crate::overrides`]).
pub const CUSTOMIZABLE_FIELDS: &[&str] = &["name", "summary", "persona", "voice.tts", "voice.style", "content_filters"];

/// Built-in tools a persona may list in `tools`: the ones the worker
/// offers the model (`get_balance`) or will, and those the catalog names.
/// Anything else is a mistake caught at validation, not a silent no-op.
pub const KNOWN_TOOLS: &[&str] = &["calculator", "get_balance", "note_taking", "timer", "web_search"];

/// Longest slug accepted.
pub const MAX_SLUG_LEN: usize = 64;

/// Oldest minimum age a persona may demand.
pub const MAX_AGE_RESTRICTION: i32 = 120;

/// Highest mean rating (ratings are 1 to 5 stars; 0 means "not rated yet").
pub const MAX_RATING: f64 = 5.0;

impl PersonaConfig {
    /// Checks every rule; the first one broken is returned, naming its field.
    pub fn validate(&self) -> Result<(), PersonaError> {
        let required = [
            ("name", &self.name),
            ("slug", &self.slug),
            ("summary", &self.summary),
            ("category", &self.category),
            ("persona", &self.persona),
            ("purpose", &self.purpose),
            ("system_prompt", &self.system_prompt),
            ("voice.tts", &self.voice.tts),
            ("voice.style", &self.voice.style),
            ("safety", &self.safety),
            ("created_by", &self.created_by),
            ("created_at", &self.created_at),
            ("version", &self.version),
        ];
        for (field, value) in required {
            if value.trim().is_empty() {
                return Err(PersonaError::invalid(field, "must not be empty"));
            }
        }
        check_slug(&self.slug)?;
        DateTime::parse_from_rfc3339(&self.created_at).map_err(|e| {
            PersonaError::invalid("created_at", format!("{:?} is not an RFC 3339 timestamp: {e}", self.created_at))
        })?;
        for (field, list) in [
            ("tools", &self.tools),
            ("content_filters", &self.content_filters),
            ("premium_features", &self.premium_features),
        ] {
            if let Some(i) = list.iter().position(|entry| entry.trim().is_empty()) {
                return Err(PersonaError::invalid(format!("{field}[{i}]"), "must not be empty"));
            }
        }
        if let Some(i) = self.tools.iter().position(|t| !KNOWN_TOOLS.contains(&t.as_str())) {
            return Err(PersonaError::invalid(
                format!("tools[{i}]"),
                format!("unknown tool {:?} (known: {})", self.tools[i], KNOWN_TOOLS.join(", ")),
            ));
        }
        if let Some(age) = self.age_restriction {
            if !(1..=MAX_AGE_RESTRICTION).contains(&age) {
                return Err(PersonaError::invalid(
                    "age_restriction",
                    format!("{age} is outside 1..={MAX_AGE_RESTRICTION} years"),
                ));
            }
        }
        for (field, limit) in [
            ("session_time_limit", self.session_time_limit),
            ("premium_session_time_limit", self.premium_session_time_limit),
            ("daily_usage_limit", self.daily_usage_limit),
        ] {
            if let Some(minutes) = limit.filter(|m| *m <= 0) {
                return Err(PersonaError::invalid(field, format!("{minutes} minutes is not a positive limit")));
            }
        }
        if !self.rating.is_finite() || !(0.0..=MAX_RATING).contains(&self.rating) {
            return Err(PersonaError::invalid("rating", format!("{} is outside 0 to {MAX_RATING}", self.rating)));
        }
        for field in &self.user_customizable_fields {
            if !CUSTOMIZABLE_FIELDS.contains(&field.as_str()) {
                return Err(PersonaError::invalid(
                    "user_customizable_fields",
                    format!("`{field}` cannot be customized (allowed: {})", CUSTOMIZABLE_FIELDS.join(", ")),
                ));
            }
        }
        crate::premium::check(self)
    }
}

/// A slug is 1 to 64 of `a-z`, `0-9` and hyphens, with no hyphen at either
/// end and never two in a row, so it can sit in a URL or a room name as is.
pub fn check_slug(slug: &str) -> Result<(), PersonaError> {
    let refuse = |why: &str| Err(PersonaError::invalid("slug", format!("{slug:?} {why}")));
    if slug.is_empty() || slug.len() > MAX_SLUG_LEN {
        return refuse("must be 1 to 64 characters long");
    }
    if !slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return refuse("may only contain lowercase a-z, 0-9 and hyphens");
    }
    if slug.starts_with('-') || slug.ends_with('-') || slug.contains("--") {
        return refuse("must not start or end with a hyphen or contain two in a row");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::template as sample;

    fn refused_field(config: &PersonaConfig) -> String {
        match config.validate() {
            Err(PersonaError::Invalid { field, .. }) => field,
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn the_sample_is_valid() {
        sample().validate().unwrap();
    }

    #[test]
    fn every_required_string_is_named_when_empty() {
        type Breaker = fn(&mut PersonaConfig);
        let cases: [(&str, Breaker); 13] = [
            ("name", |c| c.name.clear()),
            ("slug", |c| c.slug.clear()),
            ("summary", |c| c.summary = "  ".into()),
            ("category", |c| c.category.clear()),
            ("persona", |c| c.persona.clear()),
            ("purpose", |c| c.purpose.clear()),
            ("system_prompt", |c| c.system_prompt = "\n".into()),
            ("voice.tts", |c| c.voice.tts.clear()),
            ("voice.style", |c| c.voice.style.clear()),
            ("safety", |c| c.safety.clear()),
            ("created_by", |c| c.created_by.clear()),
            ("created_at", |c| c.created_at.clear()),
            ("version", |c| c.version.clear()),
        ];
        for (field, break_it) in cases {
            let mut config = sample();
            break_it(&mut config);
            assert_eq!(refused_field(&config), field);
        }
    }

    #[test]
    fn unknown_tools_are_refused_naming_the_entry() {
        let mut config = sample();
        config.tools = vec!["get_balance".into(), "launch_rockets".into()];
        let err = config.validate().unwrap_err();
        assert_eq!(err.field(), Some("tools[1]"));
        assert!(err.to_string().contains("launch_rockets"), "{err}");
        for tool in KNOWN_TOOLS {
            config.tools = vec![tool.to_string()];
            config.validate().unwrap();
        }
    }

    #[test]
    fn a_voice_without_a_tts_provider_is_refused() {
        let mut config = sample();
        config.voice.tts = String::new();
        let err = config.validate().unwrap_err();
        assert_eq!(err.field(), Some("voice.tts"));
        assert!(err.to_string().contains("voice.tts"), "{err}");
    }

    #[test]
    fn slugs_must_be_url_safe() {
        for good in ["a", "tutor", "late-night-comic", "x1-2-3", &"a".repeat(64)] {
            check_slug(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["", "Tutor", "late_night", "-tutor", "tutor-", "late--night", "caf\u{e9}", "a b", &"a".repeat(65)] {
            let mut config = sample();
            config.slug = bad.to_string();
            assert_eq!(refused_field(&config), "slug", "{bad:?}");
        }
    }

    #[test]
    fn created_at_must_be_rfc3339() {
        let mut config = sample();
        config.created_at = "2025-01-15 09:00".into();
        assert_eq!(refused_field(&config), "created_at");
        config.created_at = "2025-01-15T09:00:00+01:00".into();
        config.validate().unwrap();
    }

    #[test]
    fn age_restriction_must_be_between_1_and_120() {
        for (age, ok) in [(0, false), (-3, false), (1, true), (18, true), (120, true), (121, false)] {
            let mut config = sample();
            config.age_restriction = Some(age);
            assert_eq!(config.validate().is_ok(), ok, "age {age}");
            if !ok {
                assert_eq!(refused_field(&config), "age_restriction");
            }
        }
    }

    #[test]
    fn limits_must_be_positive_minutes() {
        let mut config = sample();
        config.session_time_limit = Some(0);
        assert_eq!(refused_field(&config), "session_time_limit");
        let mut config = sample();
        config.daily_usage_limit = Some(-10);
        assert_eq!(refused_field(&config), "daily_usage_limit");
        let mut config = sample();
        config.session_time_limit = Some(1);
        config.daily_usage_limit = Some(1440);
        config.validate().unwrap();
    }

    #[test]
    fn rating_must_be_between_0_and_5() {
        for bad in [-0.1, 5.01, f64::NAN, f64::INFINITY] {
            let mut config = sample();
            config.rating = bad;
            assert_eq!(refused_field(&config), "rating", "{bad}");
        }
    }

    #[test]
    fn list_entries_must_not_be_empty_and_are_named_by_index() {
        let mut config = sample();
        config.tools = vec!["web_search".into(), String::new()];
        assert_eq!(refused_field(&config), "tools[1]");
        let mut config = sample();
        config.content_filters = vec![" ".into()];
        assert_eq!(refused_field(&config), "content_filters[0]");
    }

    #[test]
    fn only_presentation_fields_may_be_customizable() {
        for field in CUSTOMIZABLE_FIELDS {
            let mut config = sample();
            config.user_customizable_fields = vec![field.to_string()];
            config.validate().unwrap();
        }
        for forbidden in [
            "base_cost_multiplier",
            "access_level",
            "age_restriction",
            "daily_usage_limit",
            "system_prompt",
            "safety",
            "voice",
        ] {
            let mut config = sample();
            config.user_customizable_fields = vec!["name".into(), forbidden.into()];
            let err = config.validate().unwrap_err();
            assert_eq!(err.field(), Some("user_customizable_fields"));
            assert!(err.to_string().contains(forbidden), "{err}");
        }
    }
}
