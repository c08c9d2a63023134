//! End-user authentication: a bearer JWT from the app's auth provider,
//! verified with `jsonwebtoken` against the one configured algorithm and key,
//! with issuer, audience and expiry required. `sub` must name an active user.
//! Every failure is the same 401: the client learns nothing about why, the
//! log (at debug) does.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use metering::UserId;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::Api;
use crate::config::{ApiConfig, JwtAlgorithm};

/// Installs aws-lc-rs as jsonwebtoken's process-wide crypto provider. Must run
/// before any token is signed or verified (LiveKit's token crate would
/// otherwise install its HMAC-only provider, which cannot verify RS256/ES256).
pub fn install_crypto() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

/// Checks end-user tokens.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    age_claim: String,
}

/// Who a valid token speaks for.
#[derive(Debug, Clone, Copy)]
pub struct Claims {
    pub user: UserId,
    pub age: Option<u32>,
}

impl JwtVerifier {
    /// From the `[api]` settings; a key that does not parse names the config key.
    pub fn new(c: &ApiConfig) -> anyhow::Result<JwtVerifier> {
        install_crypto();
        let pem = c.jwt_key.expose().as_bytes();
        let (algorithm, key) = match c.jwt_algorithm {
            JwtAlgorithm::Hs256 => (Algorithm::HS256, DecodingKey::from_secret(pem)),
            JwtAlgorithm::Rs256 => (
                Algorithm::RS256,
                DecodingKey::from_rsa_pem(pem)
                    .map_err(|e| anyhow::anyhow!("config key api.jwt_key is not an RSA public key in PEM: {e}"))?,
            ),
            JwtAlgorithm::Es256 => (
                Algorithm::ES256,
                DecodingKey::from_ec_pem(pem)
                    .map_err(|e| anyhow::anyhow!("config key api.jwt_key is not an EC public key in PEM: {e}"))?,
            ),
        };
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&c.jwt_issuer]);
        validation.set_audience(&[&c.jwt_audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = c.jwt_leeway_seconds;
        validation.validate_nbf = true;
        Ok(JwtVerifier { key, validation, age_claim: c.jwt_age_claim.clone() })
    }

    /// The claims of a valid token; `None` for anything else.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let data = match jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "bearer token refused");
                return None;
            }
        };
        let user: UserId = data.claims.get("sub")?.as_str()?.parse().ok()?;
        let age = match data.claims.get(&self.age_claim) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().filter(|a| *a <= 150)? as u32),
        };
        Some(Claims { user, age })
    }
}

/// The caller of an endpoint that needs a user: a valid token naming an active user.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    pub user: UserId,
    pub age: Option<u32>,
}

impl FromRequestParts<Arc<Api>> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or(ApiError::Unauthorized)?;
        let (scheme, token) = header.trim().split_once(' ').ok_or(ApiError::Unauthorized)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::Unauthorized);
        }
        let claims = api.jwt.verify(token.trim()).ok_or(ApiError::Unauthorized)?;
        let active: Option<Option<bool>> =
            sqlx::query_scalar!("SELECT is_active FROM users WHERE id = $1", claims.user.0)
                .fetch_optional(&api.pool)
                .await?;
        match active {
            Some(Some(true)) | Some(None) => Ok(AuthUser { user: claims.user, age: claims.age }),
            _ => {
                tracing::debug!(user = %claims.user, "token for an unknown or inactive user");
                Err(ApiError::Unauthorized)
            }
        }
    }
}
