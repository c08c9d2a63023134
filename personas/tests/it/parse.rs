//! Reading personas through the public API: the JSON shape of the seed's
//! `PersonaConfig` interface, and files whose errors name file and field.

use std::path::{Path, PathBuf};

use personas::{parse_persona_file, AccessLevel, Catalog, PersonaConfig, PersonaError};
use serde_json::{json, Value};

/// The interface's fields, in the interface's order.
const INTERFACE_FIELDS: [&str; 26] = [
    "name",
    "slug",
    "summary",
    "category",
    "access_level",
    "persona",
    "purpose",
    "system_prompt",
    "voice",
    "tools",
    "custom_tools",
    "safety",
    "content_filters",
    "age_restriction",
    "created_by",
    "created_at",
    "version",
    "is_active",
    "usage_count",
    "rating",
    "base_cost_multiplier",
    "session_time_limit",
    "daily_usage_limit",
    "ad_supported",
    "premium_features",
    "user_customizable_fields",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn sample_json() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("persona.json")).unwrap()).unwrap()
}

fn refused_field(value: &Value) -> String {
    match PersonaConfig::from_json_value(value) {
        Err(PersonaError::Invalid { field, .. }) => field,
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

#[test]
fn a_persona_json_round_trips_unchanged() {
    let original = sample_json();
    let persona = PersonaConfig::from_json_value(&original).unwrap();
    assert_eq!(persona.access_level, AccessLevel::Basic);
    assert_eq!(persona.base_cost_multiplier.ms_per_second(), 1250);
    assert_eq!((persona.session_time_limit, persona.daily_usage_limit), (Some(40), None));
    assert_eq!(persona.created_at, "2025-02-01T22:30:00+01:00", "created_at is kept as written");
    assert_eq!(serde_json::to_value(&persona).unwrap(), original);
}

#[test]
fn serialized_fields_follow_the_interface_order_with_nulls() {
    let text = serde_json::to_string(&PersonaConfig::from_json_value(&sample_json()).unwrap()).unwrap();
    let positions: Vec<usize> = INTERFACE_FIELDS
        .iter()
        .map(|f| text.find(&format!("\"{f}\":")).unwrap_or_else(|| panic!("{f} missing")))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert!(text.contains("\"age_restriction\":null") && text.contains("\"daily_usage_limit\":null"), "{text}");
    let object = serde_json::to_value(Catalog::builtin().get("professor-ada").unwrap()).unwrap();
    assert_eq!(object.as_object().unwrap().len(), INTERFACE_FIELDS.len());
}

#[test]
fn nullable_numbers_may_be_null_or_absent() {
    let mut value = sample_json();
    value["session_time_limit"] = Value::Null;
    value.as_object_mut().unwrap().remove("age_restriction");
    let persona = PersonaConfig::from_json_value(&value).unwrap();
    assert_eq!((persona.session_time_limit, persona.age_restriction), (None, None));
}

#[test]
fn unknown_fields_are_refused_by_name() {
    let mut value = sample_json();
    value["mood"] = json!("sleepy");
    assert_eq!(refused_field(&value), "mood");
    let err = serde_json::from_value::<PersonaConfig>(value).unwrap_err();
    assert!(err.to_string().contains("unknown field `mood`"), "serde itself names it: {err}");
    let mut value = sample_json();
    value["voice"]["pitch"] = json!(3);
    assert_eq!(refused_field(&value), "voice.pitch");
}

#[test]
fn missing_required_fields_are_named() {
    for field in ["summary", "system_prompt", "base_cost_multiplier", "custom_tools"] {
        let mut value = sample_json();
        value.as_object_mut().unwrap().remove(field);
        assert_eq!(refused_field(&value), field);
    }
    let mut value = sample_json();
    value["voice"].as_object_mut().unwrap().remove("tts");
    assert_eq!(refused_field(&value), "voice.tts");
}

#[test]
fn wrongly_typed_values_are_named() {
    for (field, bad) in [
        ("age_restriction", json!("eighteen")),
        ("usage_count", json!(-1)),
        ("tools", json!("web_search")),
        ("is_active", json!("yes")),
        ("voice", json!("cartesia")),
    ] {
        let mut value = sample_json();
        value[field] = bad;
        assert_eq!(refused_field(&value), field);
    }
}

#[test]
fn a_non_positive_or_too_precise_multiplier_names_base_cost_multiplier() {
    for bad in [json!(0), json!(-1.5), json!(1.2345)] {
        let mut value = sample_json();
        value["base_cost_multiplier"] = bad.clone();
        let err = PersonaConfig::from_json_value(&value).unwrap_err();
        assert_eq!(err.field(), Some("base_cost_multiplier"), "{bad}");
        assert!(err.to_string().contains("base_cost_multiplier"), "{err}");
    }
}

#[test]
fn an_unknown_access_level_names_access_level() {
    let mut value = sample_json();
    value["access_level"] = json!("gold");
    assert_eq!(refused_field(&value), "access_level");
}

#[test]
fn validation_runs_after_decoding() {
    let mut value = sample_json();
    value["slug"] = json!("Night Owl");
    assert_eq!(refused_field(&value), "slug");
    let mut value = sample_json();
    value["user_customizable_fields"] = json!(["safety"]);
    assert_eq!(refused_field(&value), "user_customizable_fields");
}

#[test]
fn json_files_parse() {
    let persona = parse_persona_file(fixture("persona.json")).unwrap();
    assert_eq!(persona.slug, "night-owl-librarian");
}

#[test]
fn file_errors_name_the_file_and_the_field() {
    let err = parse_persona_file(fixture("bad-field.toml")).unwrap_err();
    assert_eq!(err.field(), Some("session_time_limit"));
    let text = err.to_string();
    assert!(text.contains("bad-field.toml") && text.contains("session_time_limit"), "{text}");
}

#[test]
fn toml_datetimes_are_accepted_for_created_at() {
    let text = std::fs::read_to_string(fixture("bad-field.toml")).unwrap().replace("\"forty\"", "40");
    let persona = PersonaConfig::from_toml_str(&text).unwrap();
    assert_eq!(persona.created_at, "2025-01-15T09:00:00Z");
}

#[test]
fn syntax_errors_and_other_extensions_name_the_file() {
    let dir = std::env::temp_dir().join(format!("personas-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken.toml");
    std::fs::write(&broken, "name = \"unterminated\n").unwrap();
    let err = parse_persona_file(&broken).unwrap_err();
    assert!(
        matches!(&err, PersonaError::File { error, .. } if matches!(**error, PersonaError::Syntax { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("broken.toml"), "{err}");
    let yaml = dir.join("persona.yaml");
    std::fs::write(&yaml, "name: x\n").unwrap();
    assert!(parse_persona_file(&yaml).unwrap_err().to_string().contains("persona.yaml"));
    let missing = parse_persona_file(dir.join("absent.json")).unwrap_err();
    assert!(matches!(missing, PersonaError::Read { .. }), "{missing:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn catalog_files_parse_from_disk_as_they_are_embedded() {
    let catalog = Catalog::builtin();
    for persona in catalog.all() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog").join(format!("{}.toml", persona.slug));
        assert_eq!(&parse_persona_file(&path).unwrap(), persona);
    }
}
