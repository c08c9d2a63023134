//! Turning the slug a session asks for into the persona it gets: an active
//! custom persona from `custom_personas` first, then the catalog. Reads only;
//! counting usage or ratings is not done here.

use chrono::SecondsFormat;
use mindbot_schema::records::CustomPersona;
use mindbot_schema::UserId;
use serde_json::{Map, Number, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::config::PersonaConfig;
use crate::error::PersonaError;
use crate::validate::check_slug;

/// Where a resolved persona came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersonaSource {
    /// The built-in catalog.
    Catalog,
    /// A row of `custom_personas`.
    Custom {
        /// The row's `id`.
        id: Uuid,
        /// The user who created it.
        owner: UserId,
    },
}

/// A persona ready for the access rules, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedPersona {
    /// The validated persona.
    pub config: PersonaConfig,
    /// Catalog or custom (with the row id).
    pub source: PersonaSource,
}

/// The active persona named `slug`: an active custom persona if one has that
/// slug, else an active catalog persona, else [`PersonaError::NotFound`].
/// An inactive custom persona (column or config `is_active` false) is
/// treated as absent, so it neither resolves nor hides a catalog persona of
/// the same slug.
#[tracing::instrument(skip(pool, catalog))]
pub async fn resolve(pool: &PgPool, catalog: &Catalog, slug: &str) -> Result<ResolvedPersona, PersonaError> {
    let not_found = || PersonaError::NotFound { slug: slug.to_string() };
    // A slug that breaks the slug rule cannot name any valid persona.
    check_slug(slug).map_err(|_| not_found())?;
    let row = sqlx::query_as!(
        CustomPersona,
        r#"SELECT id, user_id AS "user_id: UserId", slug, name, config, system_prompt,
               COALESCE(created_at, NOW()) AS "created_at!", COALESCE(is_active, TRUE) AS "is_active!",
               COALESCE(usage_count, 0) AS "usage_count!", COALESCE(rating, 0)::float8 AS "rating!"
           FROM custom_personas WHERE slug = $1 AND is_active IS NOT FALSE"#,
        slug
    )
    .fetch_optional(pool)
    .await?;
    if let Some(row) = row.filter(custom_is_active) {
        if catalog.get(slug).is_some() {
            // Never served in its place: the custom rules refuse it (crate::pricing).
            tracing::warn!(slug, custom_id = %row.id, "a custom persona uses the slug of a built-in persona");
        }
        let config = custom_config(&row)?;
        return Ok(ResolvedPersona { config, source: PersonaSource::Custom { id: row.id, owner: row.user_id } });
    }
    match catalog.get(slug) {
        Some(config) if config.is_active => {
            Ok(ResolvedPersona { config: config.clone(), source: PersonaSource::Catalog })
        }
        _ => Err(not_found()),
    }
}

/// A custom persona is active only when neither its `is_active` column nor
/// an `is_active` key in its config says otherwise: either switch turns it off.
pub fn custom_is_active(row: &CustomPersona) -> bool {
    row.is_active && row.config.get("is_active") != Some(&Value::Bool(false))
}

/// The persona a `custom_personas` row describes: its `config` object, with
/// the row's `name`, `slug`, `system_prompt`, `usage_count` and `rating`
/// columns taking precedence over the same keys in the JSON, `is_active`
/// false if either says so, and
/// `created_by` always the owner's user id (a user cannot sign a persona as
/// someone else). `created_at` comes from the column when the JSON lacks it.
pub fn custom_config(row: &CustomPersona) -> Result<PersonaConfig, PersonaError> {
    let wrap = |error: PersonaError| PersonaError::Custom { slug: row.slug.clone(), error: Box::new(error) };
    let fields = custom_fields(row).map_err(wrap)?;
    PersonaConfig::from_json_value(&Value::Object(fields)).map_err(wrap)
}

/// The JSON fields [`custom_config`] decodes: the row's `config` object with
/// its columns laid over it, not yet validated (an owner's edit starts here).
pub fn custom_fields(row: &CustomPersona) -> Result<Map<String, Value>, PersonaError> {
    let Value::Object(mut fields) = row.config.clone() else {
        return Err(PersonaError::Syntax { reason: "the config column is not a JSON object".into() });
    };
    let rating = Number::from_f64(row.rating)
        .ok_or_else(|| PersonaError::invalid("rating", format!("{} is not a finite number", row.rating)))?;
    let columns = [
        ("name", Value::from(row.name.as_str())),
        ("slug", Value::from(row.slug.as_str())),
        ("system_prompt", Value::from(row.system_prompt.as_str())),
        ("is_active", Value::from(custom_is_active(row))),
        ("usage_count", Value::from(row.usage_count.max(0))),
        ("rating", Value::Number(rating)),
        ("created_by", Value::from(row.user_id.to_string())),
    ];
    for (key, value) in columns {
        fields.insert(key.to_string(), value);
    }
    fields
        .entry("created_at")
        .or_insert_with(|| Value::from(row.created_at.to_rfc3339_opts(SecondsFormat::Secs, true)));
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::template;
    use chrono::Utc;
    use serde_json::json;

    fn row(config: Value) -> CustomPersona {
        CustomPersona {
            id: Uuid::new_v4(),
            user_id: UserId(Uuid::new_v4()),
            slug: "my-coach".into(),
            name: "My Coach".into(),
            config,
            system_prompt: "You are my coach.".into(),
            created_at: Utc::now(),
            is_active: true,
            usage_count: 7,
            rating: 4.5,
        }
    }

    #[test]
    fn columns_win_over_the_config_json() {
        let mut config = serde_json::to_value(template()).unwrap();
        config["name"] = json!("Name In JSON");
        config["slug"] = json!("json-slug");
        config["system_prompt"] = json!("prompt in json");
        config["usage_count"] = json!(1);
        config["created_by"] = json!("mindbot");
        let row = row(config);
        let persona = custom_config(&row).unwrap();
        assert_eq!((persona.name.as_str(), persona.slug.as_str()), ("My Coach", "my-coach"));
        assert_eq!(persona.system_prompt, "You are my coach.");
        assert_eq!((persona.usage_count, persona.rating), (7, 4.5));
        assert_eq!(persona.created_by, row.user_id.to_string());
        assert_eq!(persona.created_at, "2025-01-15T09:00:00Z", "the JSON's own created_at is kept");
    }

    #[test]
    fn a_config_without_the_column_fields_is_completed_from_the_row() {
        let mut config = serde_json::to_value(template()).unwrap();
        for key in ["name", "slug", "system_prompt", "is_active", "usage_count", "rating", "created_by", "created_at"] {
            config.as_object_mut().unwrap().remove(key);
        }
        custom_config(&row(config)).unwrap();
    }

    #[test]
    fn a_bad_config_names_the_persona_and_the_field() {
        let mut config = serde_json::to_value(template()).unwrap();
        config["base_cost_multiplier"] = json!(0);
        let err = custom_config(&row(config)).unwrap_err();
        assert_eq!(err.field(), Some("base_cost_multiplier"));
        assert!(err.to_string().contains("my-coach"), "{err}");
        let err = custom_config(&row(json!("not an object"))).unwrap_err();
        assert!(matches!(err, PersonaError::Custom { .. }), "{err:?}");
    }
}
