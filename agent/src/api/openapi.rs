//! The OpenAPI 3.1 document of `/v1`, generated from the handlers' `utoipa`
//! annotations and the request and response types, served at
//! `/v1/openapi.json`. A test runs schemathesis against it.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{cards, error, me, my_personas, personas, sessions, token_source, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(title = "MindBot API", description = "Session tokens, balances, cards, personas, ratings and webhooks."),
    paths(
        document,
        sessions::create,
        token_source::create,
        me::balance,
        me::cards,
        me::sessions,
        my_personas::list,
        my_personas::create,
        my_personas::edit,
        my_personas::remove,
        cards::activate,
        cards::tiers,
        personas::list,
        personas::rate,
        personas::ad_interaction,
        webhooks::stripe::receive,
        webhooks::livekit::receive,
        webhooks::ads::receive,
    ),
    components(schemas(error::ErrorBody)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// The document, built once.
pub fn spec() -> &'static utoipa::openapi::OpenApi {
    static SPEC: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    SPEC.get_or_init(ApiDoc::openapi)
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "This document")))]
pub async fn document() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(spec())
}
