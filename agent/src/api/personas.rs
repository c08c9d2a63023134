//! `GET /v1/personas` (what this user may pick), `POST
//! /v1/personas/{slug}/ratings` (one rating per user, persona and session,
//! keeping `custom_personas.rating` the mean) and `POST /v1/ads/interactions`
//! (an ad view as the app reports it: validated, recorded, never rewarded).
//!
//! Custom personas are user-made rows, so they follow two rules the catalog
//! does not need ([`personas::CustomRules`], shared with the worker): no
//! built-in persona's slug, and no multiplier under
//! `personas.custom_min_multiplier`. Such rows are left out of the list and
//! refused for sessions. Their owners manage them in [`super::my_personas`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use metering::records::CustomPersona;
use metering::UserId;
use personas::access::check_age;
use personas::level::check_level;
use personas::PersonaConfig;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::AuthUser;
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use super::responses::{JsonBody, NeedsUser};
use super::Api;

/// A slug that cannot name a persona is a 422 on `persona`.
pub fn validate_slug(slug: &str) -> Result<(), ApiError> {
    personas::validate::check_slug(slug).map_err(|e| ApiError::invalid("persona", e.to_string()))
}

/// A persona as the app shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PersonaSummary {
    pub slug: String,
    pub name: String,
    pub summary: String,
    pub category: String,
    /// `free`, `basic` or `premium`.
    pub access_level: String,
    /// The cost multiplier, exact decimal text (e.g. `"1.25"`).
    pub multiplier: String,
    pub age_restriction: Option<i32>,
    /// Minutes per session, if limited.
    pub session_time_limit: Option<i32>,
    /// Minutes per session for this user when longer (premium access and a
    /// persona with a premium session limit); else absent.
    pub premium_session_time_limit: Option<i32>,
    /// Minutes per day, if limited.
    pub daily_usage_limit: Option<i32>,
    /// Mean rating (0 when unrated).
    pub rating: f64,
    pub ratings: i64,
    pub customizable_fields: Vec<String>,
    /// The persona's premium features (premium tools and customizable
    /// fields) this user does not get, below premium access; empty otherwise.
    pub premium_left_out: Vec<String>,
    /// Whether rewarded-ad time (earned seconds) pays for sessions with it.
    pub ad_supported: bool,
    /// `catalog` or `custom`.
    pub source: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PersonaList {
    pub personas: Vec<PersonaSummary>,
}

/// Every active persona (catalog and acceptable custom ones) with its source.
pub async fn pickable(api: &Api) -> Result<Vec<(PersonaConfig, &'static str)>, ApiError> {
    let mut all: Vec<(PersonaConfig, &'static str)> =
        api.catalog.all().iter().filter(|p| p.is_active).map(|p| (p.clone(), "catalog")).collect();
    let rows = sqlx::query_as!(
        CustomPersona,
        r#"SELECT id, user_id AS "user_id: UserId", slug, name, config, system_prompt,
               COALESCE(created_at, NOW()) AS "created_at!", COALESCE(is_active, TRUE) AS "is_active!",
               COALESCE(usage_count, 0) AS "usage_count!", COALESCE(rating, 0)::float8 AS "rating!"
           FROM custom_personas WHERE is_active IS NOT FALSE ORDER BY slug"#
    )
    .fetch_all(&api.pool)
    .await?;
    for row in rows {
        match personas::resolve::custom_config(&row) {
            Ok(p) if p.is_active && api.rules.check_custom(&api.catalog, &p).is_ok() => all.push((p, "custom")),
            Ok(_) => {}
            Err(e) => tracing::warn!(slug = %row.slug, error = %e, "skipping an invalid custom persona"),
        }
    }
    Ok(all)
}

#[utoipa::path(get, path = "/v1/personas", tag = "personas", security(("bearer" = [])),
    responses(
        (status = 200, description = "Personas this user may pick (access level and age)", body = PersonaList),
        NeedsUser,
    ))]
pub async fn list(State(api): State<Arc<Api>>, auth: AuthUser) -> Result<Json<PersonaList>, ApiError> {
    let level = personas::usage::user_level(&api.pool, &api.access.plans, auth.user, Utc::now()).await?;
    let stats = sqlx::query!(
        r#"SELECT persona_slug, AVG(rating)::float8 AS "mean!", COUNT(*) AS "count!"
           FROM persona_ratings GROUP BY persona_slug"#
    )
    .fetch_all(&api.pool)
    .await?;
    let stats: HashMap<String, (f64, i64)> = stats.into_iter().map(|r| (r.persona_slug, (r.mean, r.count))).collect();
    let mut out = Vec::new();
    for (p, source) in pickable(&api).await? {
        if check_level(p.access_level, level).is_err() || check_age(p.age_restriction, auth.age).is_err() {
            continue;
        }
        let (mean, count) = stats.get(&p.slug).copied().unwrap_or((0.0, 0));
        let rating = if source == "custom" || count == 0 { p.rating } else { mean };
        let (p, premium_left_out) = personas::premium::for_level(&p, level);
        out.push(PersonaSummary {
            slug: p.slug,
            name: p.name,
            summary: p.summary,
            category: p.category,
            access_level: p.access_level.as_str().to_string(),
            multiplier: p.base_cost_multiplier.decimal_text(),
            age_restriction: p.age_restriction,
            session_time_limit: p.session_time_limit,
            premium_session_time_limit: p.premium_session_time_limit,
            daily_usage_limit: p.daily_usage_limit,
            rating: (rating * 100.0).round() / 100.0,
            ratings: count,
            customizable_fields: p.user_customizable_fields,
            premium_left_out,
            ad_supported: p.ad_supported,
            source: source.to_string(),
        });
    }
    Ok(Json(PersonaList { personas: out }))
}

/// A rating of one session with a persona.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRating {
    /// The rated voice session (its `id`, as in `GET /v1/me/sessions`).
    pub session_id: Uuid,
    /// 1 to 5.
    #[schema(minimum = 1, maximum = 5)]
    pub rating: i32,
    /// Up to 2000 characters.
    #[schema(max_length = 2000)]
    pub feedback: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RatingRecorded {
    pub persona: String,
    pub rating: i32,
    /// The persona's mean rating after this one.
    pub mean: f64,
    pub ratings: i64,
}

#[utoipa::path(post, path = "/v1/personas/{slug}/ratings", tag = "personas", request_body = NewRating,
    params(("slug" = String, Path, description = "The persona's slug")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Rating recorded", body = RatingRecorded),
        JsonBody,
        NeedsUser,
        (status = 404, description = "No such session of this user with this persona", body = ErrorBody),
        (status = 409, description = "This session is rated already (`already_rated`), or has no metered second (`session_not_metered`)", body = ErrorBody),
        (status = 422, description = "A field is invalid (named)", body = ErrorBody),
    ))]
pub async fn rate(
    State(api): State<Arc<Api>>,
    auth: AuthUser,
    ApiPath(slug): ApiPath<String>,
    ApiJson(req): ApiJson<NewRating>,
) -> Result<(StatusCode, Json<RatingRecorded>), ApiError> {
    if !(1..=5).contains(&req.rating) {
        return Err(ApiError::invalid("rating", "must be an integer from 1 to 5"));
    }
    let feedback = req.feedback.as_deref().map(str::trim).filter(|f| !f.is_empty());
    if feedback.is_some_and(|f| f.chars().count() > 2000) {
        return Err(ApiError::invalid("feedback", "must be at most 2000 characters"));
    }
    let no_session = || ApiError::not_found("unknown_session", "no session of yours with this persona has that id");
    let mut tx = api.pool.begin().await?;
    let owner = sqlx::query!(
        "SELECT user_id, persona_slug, metered_ms FROM voice_sessions WHERE id = $1 FOR SHARE",
        req.session_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    match owner.map(|r| (r.user_id, r.persona_slug, r.metered_ms)) {
        // A session with no metered second was never a conversation: a
        // token and a join are not enough to rate a persona.
        Some((user, Some(s), metered)) if user == auth.user.0 && s == slug => {
            if metered < 1000 {
                return Err(ApiError::Conflict {
                    code: "session_not_metered",
                    message: format!("session {} has no metered second to rate", req.session_id),
                });
            }
        }
        _ => return Err(no_session()),
    }
    let inserted: Option<Uuid> = sqlx::query_scalar!(
        "INSERT INTO persona_ratings (user_id, persona_slug, rating, feedback, voice_session_id)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (user_id, persona_slug, voice_session_id) WHERE voice_session_id IS NOT NULL DO NOTHING
         RETURNING id",
        auth.user.0,
        &slug,
        req.rating,
        feedback,
        req.session_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    if inserted.is_none() {
        return Err(ApiError::Conflict { code: "already_rated", message: "this session is rated already".into() });
    }
    sqlx::query!("UPDATE voice_sessions SET quality_rating = $2 WHERE id = $1", req.session_id, req.rating)
        .execute(&mut *tx)
        .await?;
    let stats = sqlx::query!(
        r#"SELECT AVG(rating)::float8 AS "mean!", COUNT(*) AS "count!" FROM persona_ratings WHERE persona_slug = $1"#,
        &slug
    )
    .fetch_one(&mut *tx)
    .await?;
    let (mean, count) = (stats.mean, stats.count);
    sqlx::query!(
        "UPDATE custom_personas SET rating = (SELECT AVG(rating) FROM persona_ratings WHERE persona_slug = $1)
         WHERE slug = $1",
        &slug
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let body =
        RatingRecorded { persona: slug, rating: req.rating, mean: (mean * 1000.0).round() / 1000.0, ratings: count };
    Ok((StatusCode::CREATED, Json(body)))
}

/// An ad the user saw, as the app reports it. Recorded, never rewarded:
/// talk time is earned only through the ad server's signed callback
/// (`POST /v1/webhooks/ads`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdInteraction {
    /// The ad's id, 1 to 128 visible characters.
    #[schema(min_length = 1, max_length = 128)]
    pub ad_id: String,
    /// Lowercase letters, digits, `_` or `-`, up to 32 (e.g. `video`, `banner`).
    #[schema(min_length = 1, max_length = 32, pattern = "^[a-z0-9_-]+$")]
    pub ad_type: String,
    /// Seconds the ad was on screen, 0 to 86400.
    #[schema(minimum = 0, maximum = 86400)]
    pub view_duration: i32,
    #[serde(default)]
    pub completed: bool,
    #[serde(default)]
    pub interacted: bool,
    /// The persona the ad was shown with (for the operator's report).
    #[serde(default)]
    pub persona: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Recorded {
    pub id: Uuid,
    /// Always 0: an unsigned report earns nothing (the ad server's callback does).
    pub earned_seconds: i32,
}

/// An ad id or view id: 1 to 128 visible characters, else a 422 on `field`.
pub fn check_ad_id(field: &'static str, id: &str) -> Result<(), ApiError> {
    let len = id.chars().count();
    if !(1..=128).contains(&len) || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ApiError::invalid(field, "must be 1 to 128 visible characters"));
    }
    Ok(())
}

/// An ad type: 1 to 32 of a-z, 0-9, `_` and `-`, else a 422 on `ad_type`.
pub fn check_ad_type(t: &str) -> Result<(), ApiError> {
    if t.is_empty()
        || t.len() > 32
        || !t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(ApiError::invalid("ad_type", "must be 1 to 32 of a-z, 0-9, _ and -"));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/ads/interactions", tag = "ads", request_body = AdInteraction,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Recorded; earns nothing (rewards come from the signed callback)", body = Recorded),
        JsonBody,
        NeedsUser,
        (status = 422, description = "A field is invalid (named)", body = ErrorBody),
    ))]
pub async fn ad_interaction(
    State(api): State<Arc<Api>>,
    auth: AuthUser,
    ApiJson(req): ApiJson<AdInteraction>,
) -> Result<(StatusCode, Json<Recorded>), ApiError> {
    check_ad_id("ad_id", &req.ad_id)?;
    check_ad_type(&req.ad_type)?;
    if !(0..=86_400).contains(&req.view_duration) {
        return Err(ApiError::invalid("view_duration", "must be whole seconds from 0 to 86400"));
    }
    if let Some(p) = &req.persona {
        validate_slug(p)?;
    }
    let id: Uuid = sqlx::query_scalar!(
        "INSERT INTO ad_interactions (user_id, ad_id, ad_type, view_duration, completed, interacted, persona_slug)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        auth.user.0,
        &req.ad_id,
        &req.ad_type,
        req.view_duration,
        req.completed,
        req.interacted,
        req.persona.as_deref()
    )
    .fetch_one(&api.pool)
    .await?;
    Ok((StatusCode::CREATED, Json(Recorded { id, earned_seconds: 0 })))
}
