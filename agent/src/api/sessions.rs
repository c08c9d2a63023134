//! `POST /v1/sessions`: checks what the worker will check (user, persona
//! access and age, overrides, balance) plus the API's own limits (a minimum
//! balance in seconds, open sessions per user), then signs a LiveKit
//! participant token whose room configuration dispatches the agent with the
//! session metadata, including the persona's quote (which persona, its exact
//! rate and definition). Nothing is charged here: the worker meters the
//! session once the user and the agent are both in the room, at the quoted
//! rate or not at all. Every token is a reservation until the worker opens
//! (or refuses) its session or it expires: open sessions plus live tokens
//! count toward `max_open_sessions`, and a persona with a daily limit may
//! have one of either per user at a time.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use metering::reservations::{self, Limits, Reservation};
use personas::{AccessFacts, Quote};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::auth::AuthUser;
use super::error::{ApiError, ApiJson, ErrorBody};
use super::personas::validate_slug;
use super::responses::{JsonBody, NeedsUser, SessionRefusals};
use super::Api;
use crate::refusal::Refusal;
use crate::session::{dispatch_token, JobMetadata};

/// What the app asks for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// The persona's slug.
    #[schema(example = "professor-ada")]
    pub persona: String,
    /// Per-session changes to the persona's customizable fields, e.g. `{"voice.style": "calm"}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub overrides: Option<Map<String, Value>>,
}

/// Where and how to join.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionGrant {
    /// The LiveKit server to connect to.
    pub livekit_url: String,
    /// A new room for this session.
    pub room: String,
    /// A LiveKit participant token (identity = the user id) that dispatches the agent.
    pub token: String,
    pub persona: String,
    /// The persona's cost multiplier, exact decimal text (e.g. `"1.25"`): the
    /// price the session is charged at, or the worker refuses it (`persona_changed`).
    pub multiplier: String,
    /// Whole seconds the balance pays for at the persona's multiplier.
    pub seconds_available: i64,
}

#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = CreateSession,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "A token for a new room; the agent is dispatched when the user joins", body = SessionGrant),
        JsonBody,
        NeedsUser,
        SessionRefusals,
        (status = 422, description = "A field is invalid (named)", body = ErrorBody),
        (status = 429, description = "Too many open sessions or live tokens (`too_many_sessions`), or one of this daily-limited persona is open (`persona_session_open`)", body = ErrorBody),
    ))]
pub async fn create(
    State(api): State<Arc<Api>>,
    auth: AuthUser,
    ApiJson(req): ApiJson<CreateSession>,
) -> Result<(StatusCode, Json<SessionGrant>), ApiError> {
    let grant = grant(&api, &auth, req, None).await?;
    Ok((StatusCode::CREATED, Json(grant)))
}

/// The checks, the reservation and the token, shared with the token-source
/// endpoint; `name` is the participant's display name (the user id if `None`).
pub(super) async fn grant(
    api: &Api,
    auth: &AuthUser,
    req: CreateSession,
    name: Option<&str>,
) -> Result<SessionGrant, ApiError> {
    validate_slug(&req.persona)?;
    // The same resolution and custom rules the worker applies at join time.
    let resolved = personas::resolve_for_session(&api.pool, &api.catalog, &api.rules, &req.persona, None).await?;
    let now = Utc::now();
    let facts = AccessFacts::load(&api.pool, &api.access, auth.user, &req.persona, auth.age, now).await?;
    let overrides = req.overrides.map(Value::Object);
    let granted = personas::check_access(&resolved.config, &facts, overrides.as_ref())?;
    let rate = granted.persona.base_cost_multiplier;

    let balance = metering::balance::balance(&api.pool, auth.user).await?;
    // Earned (rewarded-ad) time pays only on ad-supported personas.
    let ad_supported = granted.persona.ad_supported;
    let seconds = balance.seconds_for(rate, ad_supported);
    let minimum = api.settings.min_session_seconds as i64;
    if seconds < minimum {
        return Err(ApiError::refused(
            Refusal::InsufficientBalance,
            format!(
                "the balance ({}) pays for {seconds} s at multiplier {}; a session needs at least {minimum} s",
                balance.funds.for_session(ad_supported),
                rate.decimal_text()
            ),
        ));
    }

    let room = format!("mindbot-{}", uuid::Uuid::new_v4().simple());
    let ttl = api.session_token_ttl();
    let reservation = Reservation { user: auth.user, room: room.clone(), persona_slug: req.persona.clone(), ttl };
    let limits = Limits {
        max_open: api.settings.max_open_sessions,
        one_per_persona: granted.persona.daily_usage_limit.is_some(),
    };
    reservations::reserve(&api.pool, &reservation, limits).await.map_err(|e| match Refusal::of_metering(&e) {
        refusal @ (Refusal::TooManySessions | Refusal::PersonaSessionOpen) => ApiError::refused(refusal, e.to_string()),
        _ => ApiError::from(e),
    })?;
    let identity = auth.user.to_string();
    // The quote pins what the user is shown here: the worker refuses the
    // session (persona_changed) if the persona is another by the time it joins.
    let metadata = JobMetadata {
        user_id: Some(identity.clone()),
        persona: Some(req.persona.clone()),
        overrides,
        age: auth.age,
        quote: Some(Quote::of(&resolved)),
    };
    let name = name.unwrap_or(&identity);
    let token = dispatch_token(&api.livekit, &identity, name, &room, &metadata, ttl).map_err(ApiError::Internal)?;
    tracing::info!(user = %auth.user, persona = %req.persona, %room, seconds, "session token issued");
    Ok(SessionGrant {
        livekit_url: api.public_livekit_url().to_string(),
        room,
        token,
        persona: req.persona,
        multiplier: rate.decimal_text(),
        seconds_available: seconds,
    })
}
