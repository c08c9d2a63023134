//! `POST /v1/token-source`, LiveKit's `TokenSource.endpoint` shape, against
//! the real binary, PostgreSQL and LiveKit server: the request the SDK sends
//! (protobuf field names, or camelCase) gets a token the Python end user
//! joins with, bringing the real worker that meters the session; refusals
//! are those of `POST /v1/sessions`.

use crate::e2e;

use crate::api_support::*;
use livekit_api::access_token::TokenVerifier;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// The request LiveKit's SDK sends for `agentName`/`agentMetadata` options.
fn sdk_request(agent_name: &str, persona: &str) -> Value {
    json!({
        "participant_name": "Ann Example",
        "room_config": {"agents": [{"agent_name": agent_name, "metadata": json!({"persona": persona}).to_string()}]}
    })
}

#[sqlx::test(migrations = "../migrations")]
async fn the_sdks_request_brings_the_real_worker_which_meters_the_session_and_camel_case_works_too(pool: PgPool) {
    let (_worker, api, agent_name, u) = worker_with_api(&pool, "mindbot-ts").await;

    let r = api.post("/v1/token-source", Some(&token(u)), &sdk_request(&agent_name, "trivia-host")).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let details = r.json();
    assert_eq!(details["server_url"], "ws://127.0.0.1:7880");
    let participant_token = details["participant_token"].as_str().unwrap();
    let claims = TokenVerifier::with_api_key("devkey", "secret").verify(participant_token).unwrap();
    assert_eq!((claims.sub.as_str(), claims.name.as_str()), (u.to_string().as_str(), "Ann Example"));
    assert_eq!(claims.video.room, details["room_name"].as_str().unwrap());

    // The user joins with it: the agent comes and the session is metered at trivia-host's x0.5.
    let report = e2e::visit(participant_token, &["--expect-data", "mindbot.session", "--stay", "6"]).await;
    let said = e2e::messages(&report, "mindbot.session");
    assert_eq!(said.first().and_then(|m| m["type"].as_str()), Some("started"), "{report}");
    let page = api.sessions_once_ended(u).await;
    let s = &page["sessions"][0];
    assert_eq!((s["room"].as_str(), s["persona"].as_str()), (details["room_name"].as_str(), Some("trivia-host")));
    assert_eq!(s["status"], "completed", "{page}");
    let (duration, cost) = (s["duration_seconds"].as_i64().unwrap(), s["cost_ms"].as_i64().unwrap());
    assert!(duration >= 1 && cost == duration * 500, "x0.5: {duration} s cost {cost} ms");

    // camelCase keys, the persona from the participant attribute, our own identity.
    let camel = json!({
        "participantIdentity": u.to_string(),
        "participantAttributes": {"mindbot.persona": "professor-ada"},
        "roomConfig": {"agents": [{"agentName": agent_name}]}
    });
    let r = api.post("/v1/token-source", Some(&token(u)), &camel).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let details = r.json();
    assert_eq!(details["persona"], "professor-ada");
    let metadata = dispatch_metadata(details["participant_token"].as_str().unwrap());
    assert_eq!(
        (metadata["user_id"].as_str(), metadata["persona"].as_str()),
        (Some(u.to_string().as_str()), Some("professor-ada"))
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn refusals_are_those_of_the_sessions_endpoint_and_the_identity_is_always_the_users(pool: PgPool) {
    let api = ApiServer::start(&pool, &[("MINDBOT_API_MIN_SESSION_SECONDS", "120")]).await;
    let u = user(&pool).await;
    card(&pool, u, 1).await;
    let t = token(u);
    // The same persona, asked both ways, is refused with the same status and code.
    for (persona, status, code) in [
        ("professor-ada", 402, "insufficient_balance"),
        ("executive-coach", 403, "access_denied"),
        ("no-such-persona", 404, "unknown_persona"),
    ] {
        let via_sessions = api.post("/v1/sessions", Some(&t), &json!({"persona": persona})).await.error(status, code);
        let via_source = api.post("/v1/token-source", Some(&t), &sdk_request("", persona)).await.error(status, code);
        assert_eq!(via_sessions["message"], via_source["message"]);
    }
    api.post("/v1/token-source", None, &sdk_request("", "trivia-host")).await.error(401, "unauthorized");

    let invalid = |body: Value| {
        let (t, api) = (t.clone(), &api);
        async move { api.post("/v1/token-source", Some(&t), &body).await.error(422, "invalid_field")["field"].clone() }
    };
    let mut other = sdk_request("", "trivia-host");
    other["participant_identity"] = json!(Uuid::new_v4().to_string());
    assert_eq!(invalid(other).await, "participant_identity");
    assert_eq!(invalid(sdk_request("someone-elses-agent", "trivia-host")).await, "room_config.agents[0].agent_name");
    assert_eq!(invalid(json!({"participant_name": "Ann"})).await, "room_config.agents[0].metadata");
    let not_json = json!({"room_config": {"agents": [{"metadata": "trivia-host"}]}});
    assert_eq!(invalid(not_json).await, "room_config.agents[0].metadata");
    assert_eq!(invalid(json!({"room_nmae": "typo"})).await, "room_nmae");
    // None of that reserved anything: trivia-host is still open to the user.
    let ok = api.post("/v1/token-source", Some(&t), &sdk_request("", "trivia-host")).await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM session_reservations WHERE user_id = $1")
        .bind(u)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(live, 1, "only the granted token is a reservation");

    // The OpenAPI document describes it (schemathesis in api_webhooks.rs exercises it).
    let doc = api.get("/v1/openapi.json", None).await.json();
    let op = &doc["paths"]["/v1/token-source"]["post"];
    assert!(op["responses"]["201"].is_object() && op["responses"]["422"].is_object(), "{op}");
}
