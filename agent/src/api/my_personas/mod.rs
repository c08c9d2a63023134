//! `GET`/`POST /v1/me/personas` and `PATCH`/`DELETE /v1/me/personas/{slug}`:
//! a user's own custom personas. Every write is a whole `PersonaConfig`,
//! decoded and validated by the personas crate (errors name the field), then
//! held to the custom rules the worker applies too ([`personas::CustomRules`]:
//! no built-in slug, no multiplier under `personas.custom_min_multiplier`).
//! The server sets who wrote a persona, when, and its statistics. A persona
//! that sessions used is retired (`is_active` false) instead of deleted, so
//! their history keeps naming it and nobody else can take its slug. Only the
//! owner sees or changes a persona; to anyone else it does not exist (404).

pub mod schema;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use metering::records::CustomPersona;
use metering::UserId;
use personas::resolve::{custom_config, custom_fields};
use personas::{PersonaConfig, PersonaError};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::AuthUser;
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use super::responses::{JsonBody, NeedsUser};
use super::Api;
use schema::{NewPersona, PersonaPatch};

/// `PersonaConfig` fields the server sets; a body naming one is refused.
const SERVER_FIELDS: &[&str] = &["created_by", "created_at", "usage_count", "rating"];

/// One of the caller's custom personas.
#[derive(Debug, Serialize, ToSchema)]
pub struct MyPersona {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    /// False once retired; a retired persona keeps its slug.
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub usage_count: i64,
    /// Mean rating (0 when unrated).
    pub rating: f64,
    /// The cost multiplier, exact decimal text; null when the stored persona is unreadable.
    pub multiplier: Option<String>,
    /// Why sessions refuse this persona as stored (invalid, a built-in slug,
    /// under the pricing floor); null when they do not.
    pub refused: Option<String>,
    /// Every `PersonaConfig` field as stored (the server's included).
    #[schema(value_type = Object)]
    pub config: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MyPersonaList {
    pub personas: Vec<MyPersona>,
}

/// What `DELETE` did.
#[derive(Debug, Serialize, ToSchema)]
pub struct PersonaRemoved {
    pub slug: String,
    /// `deleted` (no session used it) or `retired` (kept with `is_active` false).
    #[schema(example = "retired")]
    pub outcome: String,
}

#[utoipa::path(get, path = "/v1/me/personas", tag = "personas", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's custom personas, active and retired", body = MyPersonaList),
        NeedsUser,
    ))]
pub async fn list(State(api): State<Arc<Api>>, auth: AuthUser) -> Result<Json<MyPersonaList>, ApiError> {
    let rows = sqlx::query_as!(
        CustomPersona,
        r#"SELECT id, user_id AS "user_id: UserId", slug, name, config, system_prompt,
               COALESCE(created_at, NOW()) AS "created_at!", COALESCE(is_active, TRUE) AS "is_active!",
               COALESCE(usage_count, 0) AS "usage_count!", COALESCE(rating, 0)::float8 AS "rating!"
           FROM custom_personas WHERE user_id = $1 ORDER BY slug"#,
        auth.user.0
    )
    .fetch_all(&api.pool)
    .await?;
    Ok(Json(MyPersonaList { personas: rows.iter().map(|row| mine(&api, row)).collect() }))
}

#[utoipa::path(post, path = "/v1/me/personas", tag = "personas", request_body = NewPersona,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = MyPersona),
        JsonBody,
        NeedsUser,
        (status = 409, description = "The slug is taken (`slug_taken`), or the caller owns `api.max_custom_personas` already (`persona_limit`)", body = ErrorBody),
        (status = 422, description = "A field is invalid, a built-in slug, or a multiplier under the floor (named)", body = ErrorBody),
    ))]
pub async fn create(
    State(api): State<Arc<Api>>,
    auth: AuthUser,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<(StatusCode, Json<MyPersona>), ApiError> {
    let now = Utc::now();
    let mut base = Map::new();
    base.insert("created_by".into(), Value::from(auth.user.to_string()));
    base.insert("created_at".into(), Value::from(now.to_rfc3339_opts(SecondsFormat::Secs, true)));
    base.insert("usage_count".into(), Value::from(0));
    base.insert("rating".into(), Value::from(0));
    base.insert("is_active".into(), Value::from(true));
    let config = decode(&api, base, owner_fields(body)?)?;
    // Count and insert under the owner's row lock, so parallel requests
    // cannot pass the limit together.
    let mut tx = api.pool.begin().await?;
    sqlx::query!("SELECT 1 AS locked FROM users WHERE id = $1 FOR NO KEY UPDATE", auth.user.0)
        .fetch_all(&mut *tx)
        .await?;
    let owned: i64 =
        sqlx::query_scalar!(r#"SELECT COUNT(*) AS "owned!" FROM custom_personas WHERE user_id = $1"#, auth.user.0)
            .fetch_one(&mut *tx)
            .await?;
    let max = api.settings.max_custom_personas;
    if owned >= i64::from(max) {
        return Err(ApiError::Conflict {
            code: "persona_limit",
            message: format!("you own {owned} custom personas, the most allowed (api.max_custom_personas = {max})"),
        });
    }
    let row = sqlx::query_as!(
        CustomPersona,
        r#"INSERT INTO custom_personas (user_id, slug, name, config, system_prompt, is_active, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (slug) DO NOTHING
           RETURNING id, user_id AS "user_id: UserId", slug, name, config, system_prompt,
               COALESCE(created_at, NOW()) AS "created_at!", COALESCE(is_active, TRUE) AS "is_active!",
               COALESCE(usage_count, 0) AS "usage_count!", COALESCE(rating, 0)::float8 AS "rating!""#,
        auth.user.0,
        &config.slug,
        &config.name,
        stored(&config),
        &config.system_prompt,
        config.is_active,
        now
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let Some(row) = row else {
        return Err(ApiError::Conflict {
            code: "slug_taken",
            message: format!("the slug {:?} is taken by another persona", config.slug),
        });
    };
    tracing::info!(user = %auth.user, slug = %row.slug, multiplier = %config.base_cost_multiplier, "custom persona created");
    Ok((StatusCode::CREATED, Json(mine(&api, &row))))
}

#[utoipa::path(patch, path = "/v1/me/personas/{slug}", tag = "personas", request_body = PersonaPatch,
    params(("slug" = String, Path, description = "The persona's slug")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Changed", body = MyPersona),
        JsonBody,
        NeedsUser,
        (status = 404, description = "The caller has no custom persona with this slug", body = ErrorBody),
        (status = 422, description = "A field is invalid, or the multiplier under the floor (named)", body = ErrorBody),
    ))]
pub async fn edit(
    State(api): State<Arc<Api>>,
    auth: AuthUser,
    ApiPath(slug): ApiPath<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Json<MyPersona>, ApiError> {
    let body = owner_fields(body)?;
    if body.get("slug").is_some_and(|new| new.as_str() != Some(slug.as_str())) {
        return Err(ApiError::invalid("slug", "cannot be changed; create a new persona instead"));
    }
    let mut tx = api.pool.begin().await?;
    let row = own_row(&mut tx, &slug, auth.user).await?;
    // The row as stored is the base; an unreadable stored config (written
    // around the API) can still be replaced field by field.
    let mut readable = row.clone();
    if !readable.config.is_object() {
        readable.config = Value::Object(Map::new());
    }
    if !readable.rating.is_finite() {
        readable.rating = 0.0;
    }
    let base = custom_fields(&readable).map_err(field_error)?;
    let config = decode(&api, base, body)?;
    let row = sqlx::query_as!(
        CustomPersona,
        r#"UPDATE custom_personas SET name = $2, config = $3, system_prompt = $4, is_active = $5
           WHERE id = $1
           RETURNING id, user_id AS "user_id: UserId", slug, name, config, system_prompt,
               COALESCE(created_at, NOW()) AS "created_at!", COALESCE(is_active, TRUE) AS "is_active!",
               COALESCE(usage_count, 0) AS "usage_count!", COALESCE(rating, 0)::float8 AS "rating!""#,
        row.id,
        &config.name,
        stored(&config),
        &config.system_prompt,
        config.is_active
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(user = %auth.user, slug = %row.slug, multiplier = %config.base_cost_multiplier,
        active = config.is_active, "custom persona edited");
    Ok(Json(mine(&api, &row)))
}

#[utoipa::path(delete, path = "/v1/me/personas/{slug}", tag = "personas",
    params(("slug" = String, Path, description = "The persona's slug")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Deleted, or retired when sessions used it", body = PersonaRemoved),
        NeedsUser,
        (status = 404, description = "The caller has no custom persona with this slug", body = ErrorBody),
        (status = 422, description = "The path is not valid", body = ErrorBody),
    ))]
pub async fn remove(
    State(api): State<Arc<Api>>,
    auth: AuthUser,
    ApiPath(slug): ApiPath<String>,
) -> Result<Json<PersonaRemoved>, ApiError> {
    let mut tx = api.pool.begin().await?;
    let row = own_row(&mut tx, &slug, auth.user).await?;
    let used: bool = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM voice_sessions WHERE persona_slug = $1)
               OR EXISTS (SELECT 1 FROM persona_sessions WHERE persona_slug = $1) AS "used!""#,
        &row.slug
    )
    .fetch_one(&mut *tx)
    .await?;
    let outcome = if used {
        sqlx::query!("UPDATE custom_personas SET is_active = FALSE WHERE id = $1", row.id).execute(&mut *tx).await?;
        "retired"
    } else {
        sqlx::query!("DELETE FROM custom_personas WHERE id = $1", row.id).execute(&mut *tx).await?;
        "deleted"
    };
    tx.commit().await?;
    tracing::info!(user = %auth.user, slug = %row.slug, outcome, "custom persona removed");
    Ok(Json(PersonaRemoved { slug: row.slug, outcome: outcome.to_string() }))
}

/// The caller's persona `slug`, locked for this transaction; 404 for a slug
/// that is someone else's, nobody's, or cannot be a slug at all.
async fn own_row(tx: &mut PgConnection, slug: &str, owner: UserId) -> Result<CustomPersona, ApiError> {
    let missing = || ApiError::not_found("unknown_persona", format!("you have no custom persona {slug:?}"));
    if personas::validate::check_slug(slug).is_err() {
        return Err(missing());
    }
    sqlx::query_as!(
        CustomPersona,
        r#"SELECT id, user_id AS "user_id: UserId", slug, name, config, system_prompt,
               COALESCE(created_at, NOW()) AS "created_at!", COALESCE(is_active, TRUE) AS "is_active!",
               COALESCE(usage_count, 0) AS "usage_count!", COALESCE(rating, 0)::float8 AS "rating!"
           FROM custom_personas WHERE slug = $1 AND user_id = $2 FOR UPDATE"#,
        slug,
        owner.0
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(missing)
}

/// The owner's fields of a request body: none the server sets, and no NUL
/// character anywhere (PostgreSQL stores none in text or JSON).
fn owner_fields(body: Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    for (key, value) in &body {
        if SERVER_FIELDS.contains(&key.as_str()) {
            return Err(ApiError::invalid(key.as_str(), "is set by the server, not the owner"));
        }
        refuse_nul(value, key)?;
    }
    Ok(body)
}

fn refuse_nul(value: &Value, path: &str) -> Result<(), ApiError> {
    let refuse = || Err(ApiError::invalid(path, "must not contain the NUL character"));
    match value {
        Value::String(text) if text.contains('\0') => refuse(),
        Value::Array(items) => {
            items.iter().enumerate().try_for_each(|(i, item)| refuse_nul(item, &format!("{path}[{i}]")))
        }
        Value::Object(fields) => fields.iter().try_for_each(|(key, item)| {
            if key.contains('\0') {
                refuse()
            } else {
                refuse_nul(item, &format!("{path}.{key}"))
            }
        }),
        _ => Ok(()),
    }
}

/// `fields` laid over `base`, decoded and validated as a `PersonaConfig`,
/// then held to the custom rules.
fn decode(api: &Api, mut base: Map<String, Value>, fields: Map<String, Value>) -> Result<PersonaConfig, ApiError> {
    base.extend(fields);
    let config = PersonaConfig::from_json_value(&Value::Object(base)).map_err(field_error)?;
    api.rules.check_custom(&api.catalog, &config).map_err(field_error)?;
    Ok(config)
}

/// A persona error as a 422 naming its field.
fn field_error(e: PersonaError) -> ApiError {
    ApiError::Invalid { field: e.field().unwrap_or("body").to_string(), message: e.to_string() }
}

/// The `config` column for a persona.
fn stored(config: &PersonaConfig) -> Value {
    serde_json::to_value(config).expect("a persona serializes to JSON")
}

/// A row as its owner sees it, with why sessions would refuse it.
fn mine(api: &Api, row: &CustomPersona) -> MyPersona {
    let (config, multiplier, refused) = match custom_config(row) {
        Ok(config) => {
            let refused = api.rules.check_custom(&api.catalog, &config).err().map(|e| e.to_string());
            (stored(&config), Some(config.base_cost_multiplier.decimal_text()), refused)
        }
        Err(e) => {
            let raw = if row.config.is_object() { row.config.clone() } else { Value::Object(Map::new()) };
            (raw, None, Some(e.to_string()))
        }
    };
    MyPersona {
        id: row.id,
        slug: row.slug.clone(),
        name: row.name.clone(),
        is_active: personas::resolve::custom_is_active(row),
        created_at: row.created_at,
        usage_count: i64::from(row.usage_count),
        rating: if row.rating.is_finite() { row.rating } else { 0.0 },
        multiplier,
        refused,
        config,
    }
}
