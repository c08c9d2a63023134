//! The API's one error type: each variant is a status code and a JSON body
//! `{"error": code, "message": ..., "field"?: ...}`. Internal failures are
//! logged here and answered with a bare 500: nothing about the database or
//! the code reaches the client. Body, query and path rejections from axum are
//! turned into the same JSON shape by the extractors in this module.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use crate::refusal::Refusal;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable, machine-readable code (`unauthorized`, `invalid_field`, `insufficient_balance`, ...).
    pub error: String,
    /// A sentence for people.
    pub message: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Everything a handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (unparsable JSON, bad signature on a webhook).
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// No valid end-user token; the message never says why.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// A session refused for a cause the worker gives too: the code and
    /// status are the [`Refusal`]'s, the message the cause's sentence.
    #[error("{message}")]
    Refused { refusal: Refusal, message: String },
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("the request body is too large")]
    TooLarge,
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// A field failed validation; `field` names it.
    #[error("{message}")]
    Invalid { field: String, message: String },
    #[error("{message}")]
    TooManyRequests { code: &'static str, message: String, retry_after: Option<u64> },
    /// Too busy to answer now (load shed, timeout, no database connection free); sent with Retry-After: 1.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// Logged with its cause; the client sees only that it failed.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Invalid { field: field.into(), message: message.into() }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::NotFound { code, message: message.into() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest { code, message: message.into() }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Refused { refusal, .. } => {
                StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::Forbidden { code, .. }
            | ApiError::NotFound { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::TooManyRequests { code, .. }
            | ApiError::Unavailable { code, .. } => code,
            ApiError::Unauthorized => "unauthorized",
            ApiError::Refused { refusal, .. } => refusal.code(),
            ApiError::TooLarge => "body_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Invalid { .. } => "invalid_field",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = format!("{e:#}"), "API request failed");
        }
        let status = self.status();
        let field = match &self {
            ApiError::Invalid { field, .. } => Some(field.clone()),
            _ => None,
        };
        let retry = match &self {
            ApiError::TooManyRequests { retry_after: Some(s), .. } => HeaderValue::from_str(&s.to_string()).ok(),
            ApiError::Unavailable { .. } => Some(HeaderValue::from_static("1")),
            _ => None,
        };
        let body = ErrorBody { error: self.code().to_string(), message: self.to_string(), field };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(v) = retry {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        match e {
            // The API's pool is small on purpose; a full pool is load, not a fault.
            sqlx::Error::PoolTimedOut => {
                ApiError::Unavailable { code: "busy", message: "the server is busy; try again shortly".into() }
            }
            e => ApiError::Internal(e.into()),
        }
    }
}

impl From<metering::Error> for ApiError {
    fn from(e: metering::Error) -> ApiError {
        match e {
            metering::Error::Database(e @ sqlx::Error::PoolTimedOut) => e.into(),
            e => ApiError::Internal(e.into()),
        }
    }
}

impl ApiError {
    /// A refusal with the sentence of its cause.
    pub fn refused(refusal: Refusal, message: impl Into<String>) -> ApiError {
        ApiError::Refused { refusal, message: message.into() }
    }
}

impl From<personas::PersonaError> for ApiError {
    /// The worker's refusal for the same error ([`Refusal::of_persona`]);
    /// overrides are field errors naming `overrides.<field>`; our own
    /// failures are internal.
    fn from(e: personas::PersonaError) -> ApiError {
        use personas::PersonaError as P;
        match e {
            P::OverrideNotAllowed { field } => ApiError::Invalid {
                message: format!("field `{field}` cannot be overridden for this persona"),
                field: format!("overrides.{field}"),
            },
            P::InvalidOverride { field, reason } => ApiError::Invalid {
                message: format!("override of `{field}` refused: {reason}"),
                field: format!("overrides.{field}"),
            },
            e => match Refusal::of_persona(&e) {
                Refusal::Error => ApiError::Internal(e.into()),
                refusal => ApiError::refused(refusal, e.to_string()),
            },
        }
    }
}

/// A JSON body whose rejections are [`ApiError`]s naming what is wrong.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(JsonRejection::JsonDataError(e)) => Err(data_error(&e.body_text())),
            Err(JsonRejection::JsonSyntaxError(_)) => {
                Err(ApiError::bad_request("malformed_json", "the request body is not valid JSON"))
            }
            Err(JsonRejection::BytesRejection(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::TooLarge)
            }
            Err(e) => Err(ApiError::bad_request("bad_body", e.body_text())),
        }
    }
}

/// Turns axum's JSON data error text into a field error.
fn data_error(text: &str) -> ApiError {
    let detail = text.strip_prefix("Failed to deserialize the JSON body into the target type: ").unwrap_or(text);
    field_error(detail, "body")
}

/// A field error from serde's text: `path: message` (a field's own error) or
/// ``missing field `x` ``/``unknown field `x` `` (the object's), else `fallback`.
fn field_error(detail: &str, fallback: &str) -> ApiError {
    match detail.split_once(": ") {
        Some((path, message)) if !path.contains(' ') && path != "." => ApiError::invalid(path, message),
        _ => {
            let field = detail
                .split('`')
                .nth(1)
                .filter(|_| detail.starts_with("missing field") || detail.starts_with("unknown field"))
                .unwrap_or(fallback);
            ApiError::invalid(field, detail)
        }
    }
}

/// Query parameters whose rejections name the parameter.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                let text = e.body_text();
                let detail = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text);
                Err(field_error(detail, "query"))
            }
            Err(e) => Err(ApiError::invalid("query", e.body_text())),
        }
    }
}

/// A raw body (webhooks verify signatures over the exact bytes).
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => Ok(RawBody(b)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::TooLarge),
            Err(e) => Err(ApiError::bad_request("bad_body", e.body_text())),
        }
    }
}

/// A path parameter whose rejection names it.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(e @ PathRejection::FailedToDeserializePathParams(_)) => Err(ApiError::invalid("path", e.body_text())),
            Err(e) => Err(ApiError::Internal(anyhow::anyhow!("path extraction: {}", e.body_text()))),
        }
    }
}
