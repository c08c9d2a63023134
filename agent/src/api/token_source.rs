//! `POST /v1/token-source`: connection details in the shape LiveKit's client
//! SDK asks for with `TokenSource.endpoint(url)`, so an app built on it (the
//! agent starters) works against mindbot as is.
//!
//! The SDK posts a `TokenSourceRequest` as JSON with the protobuf field names
//! (`room_name`, `participant_name`, `participant_identity`,
//! `participant_metadata`, `participant_attributes`, `room_config` with
//! `agents[0]` = {`agent_name`, `metadata`}); camelCase keys are accepted
//! too. It reads `server_url` and `participant_token` (protobuf JSON reading
//! takes either spelling; we answer the protobuf names, plus our own fields,
//! which it ignores). The request maps onto `POST /v1/sessions`, the same
//! code with the same checks and errors:
//! - the persona comes from the dispatch metadata (`{"persona": slug,
//!   "overrides": {...}}` in `room_config.agents[0].metadata`) or else from
//!   the participant attribute `mindbot.persona`;
//! - the identity is always the signed-in user's: a different
//!   `participant_identity` is refused (422), never used for who pays;
//! - `room_name` is ignored: every session gets a new room, as with
//!   `/v1/sessions`; an `agent_name` other than this worker's is refused;
//! - `participant_name` becomes the display name; `participant_metadata`
//!   and the other attributes are not carried into the token.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::auth::AuthUser;
use super::error::{ApiError, ApiJson, ErrorBody};
use super::responses::{JsonBody, NeedsUser, SessionRefusals};
use super::sessions::{grant, CreateSession};
use super::Api;

/// The participant attribute that may name the persona.
pub const PERSONA_ATTRIBUTE: &str = "mindbot.persona";
/// Longest display name taken, in characters.
const MAX_NAME_CHARS: usize = 128;

/// LiveKit's `TokenSourceRequest` (protobuf field names; camelCase accepted).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenSourceRequest {
    /// Ignored: every session gets a new room.
    #[serde(default, alias = "roomName")]
    pub room_name: Option<String>,
    /// The display name in the room.
    #[serde(default, alias = "participantName")]
    pub participant_name: Option<String>,
    /// Must be absent or the signed-in user's id.
    #[serde(default, alias = "participantIdentity")]
    pub participant_identity: Option<String>,
    /// Not carried into the token.
    #[serde(default, alias = "participantMetadata")]
    pub participant_metadata: Option<String>,
    /// `mindbot.persona` names the persona when the dispatch metadata does not.
    #[serde(default, alias = "participantAttributes")]
    pub participant_attributes: Option<HashMap<String, String>>,
    #[serde(default, alias = "roomConfig")]
    pub room_config: Option<RoomConfig>,
}

/// The parts of LiveKit's `RoomConfiguration` read here (others are ignored).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RoomConfig {
    #[serde(default)]
    pub agents: Vec<AgentDispatch>,
}

/// LiveKit's `RoomAgentDispatch`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct AgentDispatch {
    /// Empty or this worker's agent name.
    #[serde(default, alias = "agentName")]
    pub agent_name: String,
    /// JSON: `{"persona": slug, "overrides": {...}}`.
    #[serde(default)]
    pub metadata: String,
}

/// LiveKit's `TokenSourceResponse`, plus what `/v1/sessions` tells the app.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenSourceResponse {
    /// The LiveKit server to connect to.
    pub server_url: String,
    /// A participant token (identity = the user id) that dispatches the agent.
    pub participant_token: String,
    pub room_name: String,
    pub persona: String,
    /// The persona's cost multiplier, exact decimal text.
    pub multiplier: String,
    /// Whole seconds the balance pays for at the persona's multiplier.
    pub seconds_available: i64,
}

/// What the dispatch metadata may say.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DispatchMetadata {
    #[serde(default)]
    persona: Option<String>,
    #[serde(default)]
    overrides: Option<Map<String, Value>>,
}

#[utoipa::path(post, path = "/v1/token-source", tag = "sessions", request_body = TokenSourceRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Connection details for a new room; the agent is dispatched when the user joins", body = TokenSourceResponse),
        JsonBody,
        NeedsUser,
        SessionRefusals,
        (status = 422, description = "A field is invalid (named): no persona, another identity, another agent", body = ErrorBody),
        (status = 429, description = "Too many open sessions or live tokens, or one of this daily-limited persona is open", body = ErrorBody),
    ))]
pub async fn create(
    State(api): State<Arc<Api>>,
    auth: AuthUser,
    ApiJson(req): ApiJson<TokenSourceRequest>,
) -> Result<(StatusCode, Json<TokenSourceResponse>), ApiError> {
    let session = to_session(&req, &auth.user.to_string(), &api.livekit.agent_name)?;
    if req.room_name.is_some() || req.participant_metadata.is_some() {
        tracing::debug!(room_name = ?req.room_name, "token source: room_name and participant_metadata are not used");
    }
    let name = req.participant_name.as_deref().map(str::trim).filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.chars().count() > MAX_NAME_CHARS) {
        return Err(ApiError::invalid("participant_name", format!("at most {MAX_NAME_CHARS} characters")));
    }
    let granted = grant(&api, &auth, session, name).await?;
    let answer = TokenSourceResponse {
        server_url: granted.livekit_url,
        participant_token: granted.token,
        room_name: granted.room,
        persona: granted.persona,
        multiplier: granted.multiplier,
        seconds_available: granted.seconds_available,
    };
    Ok((StatusCode::CREATED, Json(answer)))
}

/// The `/v1/sessions` request a token-source request stands for.
fn to_session(req: &TokenSourceRequest, user: &str, agent_name: &str) -> Result<CreateSession, ApiError> {
    if req.participant_identity.as_deref().is_some_and(|i| !i.is_empty() && i != user) {
        return Err(ApiError::invalid(
            "participant_identity",
            "must be absent or the signed-in user's id: the identity is always the user's",
        ));
    }
    let agent = req.room_config.as_ref().and_then(|c| c.agents.first());
    if agent.is_some_and(|a| !a.agent_name.is_empty() && a.agent_name != agent_name) {
        return Err(ApiError::invalid(
            "room_config.agents[0].agent_name",
            format!("only {agent_name:?} is dispatched here (or leave it empty)"),
        ));
    }
    let metadata = match agent.map(|a| a.metadata.trim()).filter(|m| !m.is_empty()) {
        None => DispatchMetadata { persona: None, overrides: None },
        Some(text) => serde_json::from_str(text).map_err(|e| {
            ApiError::invalid(
                "room_config.agents[0].metadata",
                format!("must be JSON like {{\"persona\": \"professor-ada\"}}: {e}"),
            )
        })?,
    };
    let from_attribute = req.participant_attributes.as_ref().and_then(|a| a.get(PERSONA_ATTRIBUTE)).cloned();
    let persona = metadata.persona.or(from_attribute).ok_or_else(|| {
        ApiError::invalid(
            "room_config.agents[0].metadata",
            format!("name the persona: {{\"persona\": slug}} here, or the participant attribute {PERSONA_ATTRIBUTE}"),
        )
    })?;
    Ok(CreateSession { persona, overrides: metadata.overrides })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: Value) -> TokenSourceRequest {
        serde_json::from_value(json).unwrap()
    }

    fn field(e: ApiError) -> String {
        match e {
            ApiError::Invalid { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_persona_comes_from_the_dispatch_metadata_then_the_attribute_in_either_spelling() {
        let snake = request(serde_json::json!({
            "participant_name": "Ann",
            "room_config": {"agents": [{"agent_name": "mindbot", "metadata": "{\"persona\":\"professor-ada\"}"}]},
            "participant_attributes": {"mindbot.persona": "other"}
        }));
        assert_eq!(to_session(&snake, "u1", "mindbot").unwrap().persona, "professor-ada");
        let camel = request(serde_json::json!({
            "participantIdentity": "u1",
            "participantAttributes": {"mindbot.persona": "coach-max"},
            "roomConfig": {"agents": [{"agentName": ""}]}
        }));
        assert_eq!(to_session(&camel, "u1", "mindbot").unwrap().persona, "coach-max");
    }

    #[test]
    fn another_identity_another_agent_or_no_persona_is_refused_naming_the_field() {
        let other = request(serde_json::json!({"participant_identity": "someone-else",
            "participant_attributes": {"mindbot.persona": "coach-max"}}));
        assert_eq!(field(to_session(&other, "u1", "mindbot").unwrap_err()), "participant_identity");
        let agent = request(serde_json::json!({"room_config": {"agents": [{"agent_name": "theirs"}]}}));
        assert_eq!(field(to_session(&agent, "u1", "mindbot").unwrap_err()), "room_config.agents[0].agent_name");
        let none = request(serde_json::json!({}));
        assert_eq!(field(to_session(&none, "u1", "mindbot").unwrap_err()), "room_config.agents[0].metadata");
        let bad = request(serde_json::json!({"room_config": {"agents": [{"metadata": "persona=x"}]}}));
        assert_eq!(field(to_session(&bad, "u1", "mindbot").unwrap_err()), "room_config.agents[0].metadata");
    }
}
