//! Premium features: capabilities a persona keeps for users with `premium`
//! access. Each entry of `premium_features` names one of them:
//! - a built-in tool the persona lists in `tools` (`calculator`, ...): only
//!   premium users' sessions offer it to the model;
//! - a field the persona lists in `user_customizable_fields` (`voice.style`,
//!   ...): only premium users may override it;
//! - `premium_session_time_limit`: premium users' sessions may last that
//!   many minutes instead of `session_time_limit` (a longer limit).
//!
//! A user below premium gets the persona without them, never a refusal: the
//! tools are dropped, overrides of those fields are left out, and the names
//! of what was left out travel with the grant so the app can say so.

use serde_json::Value;

use crate::config::PersonaConfig;
use crate::error::PersonaError;
use crate::level::AccessLevel;
use crate::validate::{CUSTOMIZABLE_FIELDS, KNOWN_TOOLS};

/// The premium feature that is a longer session limit.
pub const LONGER_SESSIONS: &str = "premium_session_time_limit";

/// Checks every `premium_features` entry: a known tool the persona lists in
/// `tools`, a customizable field it lists in `user_customizable_fields`, or
/// `premium_session_time_limit` when it sets that limit above
/// `session_time_limit`. The error names the entry (`premium_features[1]`).
pub fn check(persona: &PersonaConfig) -> Result<(), PersonaError> {
    for (i, name) in persona.premium_features.iter().enumerate() {
        let field = format!("premium_features[{i}]");
        let listed = |list: &[String]| list.iter().any(|t| t == name);
        if name == LONGER_SESSIONS {
            if persona.premium_session_time_limit.is_none() {
                return Err(PersonaError::invalid(field, format!("{LONGER_SESSIONS} is not set")));
            }
        } else if KNOWN_TOOLS.contains(&name.as_str()) {
            if !listed(&persona.tools) {
                return Err(PersonaError::invalid(field, format!("tool {name:?} is not in the persona's tools")));
            }
        } else if CUSTOMIZABLE_FIELDS.contains(&name.as_str()) {
            if !listed(&persona.user_customizable_fields) {
                return Err(PersonaError::invalid(
                    field,
                    format!("field {name:?} is not in the persona's user_customizable_fields"),
                ));
            }
        } else {
            return Err(PersonaError::invalid(
                field,
                format!(
                    "unknown premium feature {name:?} (a tool: {}; a customizable field: {}; or {LONGER_SESSIONS})",
                    KNOWN_TOOLS.join(", "),
                    CUSTOMIZABLE_FIELDS.join(", ")
                ),
            ));
        }
    }
    let longer = persona.premium_features.iter().any(|f| f == LONGER_SESSIONS);
    match (persona.premium_session_time_limit, persona.session_time_limit) {
        (Some(_), _) if !longer => {
            return Err(PersonaError::invalid(
                LONGER_SESSIONS,
                format!("is set but {LONGER_SESSIONS:?} is not in premium_features"),
            ))
        }
        (Some(premium), Some(limit)) if premium <= limit => {
            return Err(PersonaError::invalid(
                LONGER_SESSIONS,
                format!("{premium} minutes is not longer than session_time_limit ({limit})"),
            ))
        }
        (Some(_), None) => {
            return Err(PersonaError::invalid(LONGER_SESSIONS, "needs a session_time_limit to be longer than"))
        }
        _ => {}
    }
    Ok(())
}

/// The premium features a user at `level` does not get: all of them below
/// premium, none at premium.
pub fn left_out(persona: &PersonaConfig, level: AccessLevel) -> Vec<String> {
    if level >= AccessLevel::Premium {
        return Vec::new();
    }
    persona.premium_features.clone()
}

/// The persona as a user at `level` gets it: premium tools and premium
/// customizable fields removed below premium. Returns it with the names
/// left out.
pub fn for_level(persona: &PersonaConfig, level: AccessLevel) -> (PersonaConfig, Vec<String>) {
    let out = left_out(persona, level);
    let mut p = persona.clone();
    p.tools.retain(|t| !out.contains(t));
    p.user_customizable_fields.retain(|f| !out.contains(f));
    p.premium_features.retain(|f| !out.contains(f));
    if out.iter().any(|f| f == LONGER_SESSIONS) {
        p.premium_session_time_limit = None;
    }
    (p, out)
}

/// `overrides` without the keys in `left_out` (premium fields a user below
/// premium asked to change): those are left out like the rest, not refused.
pub fn without_left_out(overrides: &Value, left_out: &[String]) -> Value {
    match overrides {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(k, _)| !left_out.contains(k)).map(|(k, v)| (k.clone(), v.clone())).collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::template;
    use serde_json::json;

    fn with_premium(features: &[&str]) -> PersonaConfig {
        let mut p = template();
        p.tools = vec!["calculator".into(), "web_search".into()];
        p.premium_features = features.iter().map(|f| f.to_string()).collect();
        p
    }

    #[test]
    fn known_tools_and_customizable_fields_are_premium_features() {
        assert!(check(&with_premium(&["calculator", "voice.style"])).is_ok());
    }

    #[test]
    fn an_unknown_premium_feature_is_refused_naming_the_entry() {
        let err = check(&with_premium(&["calculator", "reading_list_export"])).unwrap_err();
        assert_eq!(err.field(), Some("premium_features[1]"));
        assert!(err.to_string().contains("reading_list_export"), "{err}");
    }

    #[test]
    fn a_premium_tool_the_persona_does_not_list_is_refused() {
        let err = check(&with_premium(&["timer"])).unwrap_err();
        assert_eq!(err.field(), Some("premium_features[0]"));
        let err = check(&with_premium(&["summary"])).unwrap_err();
        assert!(err.to_string().contains("user_customizable_fields"), "{err}");
    }

    #[test]
    fn a_free_user_gets_the_persona_without_its_premium_features_and_a_premium_user_with() {
        let p = with_premium(&["calculator", "voice.style"]);
        let (free, out) = for_level(&p, AccessLevel::Free);
        assert_eq!(out, vec!["calculator".to_string(), "voice.style".to_string()]);
        assert_eq!(free.tools, vec!["web_search".to_string()]);
        assert!(!free.user_customizable_fields.contains(&"voice.style".to_string()));
        let (premium, out) = for_level(&p, AccessLevel::Premium);
        assert!(out.is_empty());
        assert_eq!(premium, p);
    }

    #[test]
    fn a_longer_premium_session_limit_is_for_premium_users_only_and_must_be_longer() {
        let mut p = with_premium(&[LONGER_SESSIONS]);
        p.session_time_limit = Some(30);
        p.premium_session_time_limit = Some(90);
        assert!(check(&p).is_ok());
        let (free, out) = for_level(&p, AccessLevel::Basic);
        assert_eq!((free.premium_session_time_limit, out), (None, vec![LONGER_SESSIONS.to_string()]));
        let (premium, _) = for_level(&p, AccessLevel::Premium);
        assert_eq!(premium.premium_session_time_limit, Some(90));
        p.premium_session_time_limit = Some(30);
        assert_eq!(check(&p).unwrap_err().field(), Some(LONGER_SESSIONS));
        p.premium_session_time_limit = Some(90);
        p.premium_features.clear();
        assert_eq!(check(&p).unwrap_err().field(), Some(LONGER_SESSIONS));
        p.premium_features = vec![LONGER_SESSIONS.into()];
        p.premium_session_time_limit = None;
        assert_eq!(check(&p).unwrap_err().field(), Some("premium_features[0]"));
    }

    #[test]
    fn overrides_of_left_out_fields_are_dropped_not_refused() {
        let o = json!({"voice.style": "bright", "name": "Ada"});
        assert_eq!(without_left_out(&o, &["voice.style".into()]), json!({"name": "Ada"}));
    }
}
