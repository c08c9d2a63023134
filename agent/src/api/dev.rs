//! The local demo's sign-in (`api.dev_login`, off by default): `POST
//! /v1/dev/login` answers an app JWT for the demo user (the one `mindbot-agent
//! demo` uses, topped up through `metering` when under a minute), signed with
//! `api.jwt_key` like the app's auth provider would, valid one hour; `GET
//! /v1/dev/login` tells the web app the button may show. The configuration
//! refuses it unless the server listens on loopback only. Off, neither route
//! exists (the API's 404). Not in the OpenAPI document: no app calls it.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;
use serde_json::json;

use super::error::ApiError;
use super::Api;

/// How long a dev sign-in lasts.
const TOKEN_SECONDS: i64 = 3600;

/// `POST /v1/dev/login`'s answer.
#[derive(Debug, Serialize)]
pub struct DevLogin {
    /// A bearer JWT for every `/v1` call.
    pub token: String,
    pub user_id: String,
    pub expires_in: i64,
}

/// `GET /v1/dev/login`: present only when dev sign-in is on.
pub async fn available() -> Json<serde_json::Value> {
    Json(json!({"enabled": true}))
}

/// `POST /v1/dev/login`: a token for the demo user.
pub async fn login(State(api): State<Arc<Api>>) -> Result<Json<DevLogin>, ApiError> {
    let user = crate::demo::demo_user(&api.pool).await.map_err(ApiError::Internal)?;
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "sub": user.to_string(),
        "iss": api.settings.jwt_issuer,
        "aud": api.settings.jwt_audience,
        "iat": now,
        "exp": now + TOKEN_SECONDS,
    });
    let key = EncodingKey::from_secret(api.settings.jwt_key.expose().as_bytes());
    let token = jsonwebtoken::encode(&Header::default(), &claims, &key)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("signing the demo user's token: {e}")))?;
    tracing::info!(user = %user, "dev sign-in as the demo user");
    Ok(Json(DevLogin { token, user_id: user.to_string(), expires_in: TOKEN_SECONDS }))
}
