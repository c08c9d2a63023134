//! The error answers that several endpoints share, documented once for the
//! OpenAPI document: what the extractors refuse ([`super::auth::AuthUser`],
//! [`super::error::ApiJson`]) and what the session checks refuse (shared by
//! `/v1/sessions` and `/v1/token-source`). Handlers list these types in their
//! `responses(...)` beside their own answers. Documentation only: the
//! answers themselves are [`super::error::ApiError`]s.

use std::collections::BTreeMap;

use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::IntoResponses;

/// `(status, description)` pairs as JSON error answers with an `ErrorBody`.
fn error_answers(answers: &[(&str, &str)]) -> BTreeMap<String, RefOr<Response>> {
    answers
        .iter()
        .map(|(status, description)| {
            let body = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
            let response = ResponseBuilder::new().description(*description).content("application/json", body).build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

/// The 401 of an endpoint that needs a signed-in user.
pub struct NeedsUser;

impl IntoResponses for NeedsUser {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_answers(&[("401", "No valid token")])
    }
}

/// What a JSON body is refused with before the handler sees it.
pub struct JsonBody;

impl IntoResponses for JsonBody {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_answers(&[("400", "Malformed JSON"), ("413", "Body too large"), ("415", "Not JSON")])
    }
}

/// What the session checks refuse before a token is signed.
pub struct SessionRefusals;

impl IntoResponses for SessionRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_answers(&[
            ("402", "Balance below the minimum"),
            ("403", "Access level, age or daily limit"),
            ("404", "Unknown persona"),
        ])
    }
}
