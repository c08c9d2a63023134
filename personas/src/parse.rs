//! Reading a persona from JSON text, TOML text, a stored JSON value or a file,
//! then validating it. Every route goes through one JSON value, so the same
//! decoder names the faulty field whatever the source: serde's own message
//! says what is wrong, and a second pass says where, by trying each field
//! of the input on its own inside an otherwise valid persona.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{PersonaConfig, Voice};
use crate::error::PersonaError;
use crate::level::AccessLevel;

impl PersonaConfig {
    /// Decodes a persona from a JSON value (an object of the interface's
    /// fields) and validates it.
    pub fn from_json_value(value: &Value) -> Result<PersonaConfig, PersonaError> {
        let config = PersonaConfig::deserialize(value).map_err(|err| locate_fault(value, &err))?;
        config.validate()?;
        Ok(config)
    }

    /// Decodes and validates a persona written as JSON.
    pub fn from_json_str(text: &str) -> Result<PersonaConfig, PersonaError> {
        let value: Value = serde_json::from_str(text).map_err(|e| PersonaError::Syntax { reason: e.to_string() })?;
        PersonaConfig::from_json_value(&value)
    }

    /// Decodes and validates a persona written as TOML (top-level keys are
    /// the interface's fields; `[voice]` is a table; a TOML date-time is
    /// accepted for `created_at`).
    pub fn from_toml_str(text: &str) -> Result<PersonaConfig, PersonaError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| PersonaError::Syntax { reason: e.to_string() })?;
        PersonaConfig::from_json_value(&toml_to_json(toml::Value::Table(table), "")?)
    }
}

/// Reads one persona file, TOML or JSON by its extension (`.toml`, `.json`).
/// Any error names the file, and the field when there is one.
pub fn parse_persona_file(path: impl AsRef<Path>) -> Result<PersonaConfig, PersonaError> {
    let path = path.as_ref();
    let in_file = |error: PersonaError| PersonaError::File { path: path.to_path_buf(), error: Box::new(error) };
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let decode: fn(&str) -> Result<PersonaConfig, PersonaError> = match extension.as_deref() {
        Some("toml") => PersonaConfig::from_toml_str,
        Some("json") => PersonaConfig::from_json_str,
        _ => return Err(in_file(PersonaError::Syntax { reason: "expected a .toml or .json file".into() })),
    };
    let text = std::fs::read_to_string(path).map_err(|error| PersonaError::Read { path: path.to_path_buf(), error })?;
    decode(&text).map_err(in_file)
}

/// Turns serde's complaint about `input` into an error naming the field.
fn locate_fault(input: &Value, err: &serde_json::Error) -> PersonaError {
    let Value::Object(fields) = input else {
        return PersonaError::Syntax { reason: format!("a persona must be an object of fields: {err}") };
    };
    let template = serde_json::to_value(template()).expect("the template persona serializes");
    let Value::Object(template_fields) = &template else { unreachable!("a persona serializes to an object") };
    match find_fault(fields, template_fields, &[], &template) {
        Some((field, reason)) => PersonaError::Invalid { field, reason },
        None => PersonaError::Syntax { reason: err.to_string() },
    }
}

/// The first field of `input` (at `path` inside the persona) that would
/// spoil the otherwise valid `root`: unknown, required but missing, or
/// refused by serde when put in `root` alone.
fn find_fault(
    input: &Map<String, Value>,
    template: &Map<String, Value>,
    path: &[&str],
    root: &Value,
) -> Option<(String, String)> {
    let dotted = |key: &str| path.iter().copied().chain([key]).collect::<Vec<_>>().join(".");
    if let Some(key) = input.keys().find(|key| !template.contains_key(*key)) {
        return Some((dotted(key), "unknown field".into()));
    }
    for (key, expected) in template {
        let mut at: Vec<&str> = path.to_vec();
        at.push(key);
        let outcome = match (input.get(key), expected) {
            (Some(Value::Object(inner)), Value::Object(inner_template)) => {
                match find_fault(inner, inner_template, &at, root) {
                    Some(fault) => return Some(fault),
                    None => continue,
                }
            }
            (Some(value), _) => try_with(root, &at, Some(value.clone())),
            (None, _) => try_with(root, &at, None).map_err(|_| "is required but missing".to_string()),
        };
        if let Err(reason) = outcome {
            return Some((dotted(key), reason));
        }
    }
    None
}

/// Deserializes `root` with the field at `path` replaced (or removed, for `None`).
fn try_with(root: &Value, path: &[&str], value: Option<Value>) -> Result<(), String> {
    let mut candidate = root.clone();
    let (last, parents) = path.split_last().expect("a field path is never empty");
    let mut object = candidate.as_object_mut();
    for parent in parents {
        object = object.and_then(|o| o.get_mut(*parent)).and_then(Value::as_object_mut);
    }
    let object = object.expect("the template has every parent object");
    match value {
        Some(value) => object.insert(last.to_string(), value),
        None => object.remove(*last),
    };
    PersonaConfig::deserialize(&candidate).map(|_| ()).map_err(|e| e.to_string())
}

/// TOML to JSON, keeping numbers' kinds; a date-time becomes its RFC 3339 text.
fn toml_to_json(value: toml::Value, path: &str) -> Result<Value, PersonaError> {
    Ok(match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| PersonaError::invalid(path, format!("{f} is not a finite number")))?,
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| toml_to_json(item, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(table) => Value::Object(
            table
                .into_iter()
                .map(|(key, item)| {
                    let inner = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                    Ok((key, toml_to_json(item, &inner)?))
                })
                .collect::<Result<_, PersonaError>>()?,
        ),
    })
}

/// A valid persona with every field present: the yardstick `find_fault`
/// measures each input field against (and the unit tests' starting point).
pub(crate) fn template() -> PersonaConfig {
    PersonaConfig {
        name: "Sample Guide".into(),
        slug: "sample-guide".into(),
        summary: "A patient guide.".into(),
        category: "testing".into(),
        access_level: AccessLevel::Free,
        persona: "Calm and precise.".into(),
        purpose: "Answer questions.".into(),
        system_prompt: "You are a calm, precise guide.".into(),
        voice: Voice { tts: "cartesia".into(), style: "warm-neutral".into() },
        tools: vec!["web_search".into()],
        custom_tools: vec![],
        safety: "Stay on topic.".into(),
        content_filters: vec!["profanity".into()],
        age_restriction: None,
        created_by: "mindbot".into(),
        created_at: "2025-01-15T09:00:00Z".into(),
        version: "1.0.0".into(),
        is_active: true,
        usage_count: 0,
        rating: 0.0,
        base_cost_multiplier: mindbot_schema::Rate::ONE,
        session_time_limit: None,
        premium_session_time_limit: None,
        daily_usage_limit: None,
        ad_supported: false,
        premium_features: vec![],
        user_customizable_fields: vec!["voice.style".into(), "name".into(), "content_filters".into()],
    }
}
