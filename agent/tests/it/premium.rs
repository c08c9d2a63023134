//! Premium features end to end: a custom persona made through the API keeps
//! its calculator tool and its voice style for premium users. The real
//! worker (voice on, API served) and the Python end user: a free user's
//! model is offered no calculator and is told what was left out; a premium
//! user's model is offered it. What the model was offered is read from the
//! speech services' own record (`GET /inspect`), on a private instance.

use crate::e2e;

use std::process::Stdio;

use crate::api_support::*;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// The private speech services' port (this test's range is 7960-7969).
const SPEECH_PORT: u16 = 7961;

async fn speech_services() -> (tokio::process::Child, String) {
    mindbot_tests::speech::private_speech_services(Some(SPEECH_PORT)).await
}

/// The tool names each chat request since the last reset was offered.
async fn offered() -> Vec<Vec<String>> {
    let r = request(SPEECH_PORT, "GET", "/inspect", &[], None).await;
    let v: Value = serde_json::from_str(&r.body).unwrap();
    v["llm"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .collect()
}

async fn reset() {
    let headers = [("Content-Type", "application/json")];
    assert_eq!(request(SPEECH_PORT, "POST", "/control", &headers, Some(br#"{"reset": true}"#)).await.status, 200);
}

/// The user speaks one question and hears the answer; the talker's report.
async fn ask(token: &str) -> Value {
    e2e::talk(token, &["--say", "Hello. What is your name?", "--no-transcribe"]).await
}

async fn premium_user(pool: &PgPool) -> Uuid {
    let u = user(pool).await;
    mindbot_tests::db::subscribe(pool, u, "premium_monthly").await;
    u
}

#[sqlx::test(migrations = "../migrations")]
async fn a_free_user_is_offered_no_premium_tool_and_told_so_and_a_premium_user_is_offered_it(pool: PgPool) {
    e2e::ensure("scripts/livekit-server.sh", Some("start"));
    e2e::ensure("scripts/python-env.sh", None);
    e2e::ensure("scripts/deps.sh", None);
    let (_speech, base) = speech_services().await;
    let agent_name = format!("mindbot-premium-{}", Uuid::new_v4().simple());
    let mut env: Vec<(&str, &str)> = api_env();
    env.extend([
        ("MINDBOT_VOICE_ENABLED", "true"),
        ("MINDBOT_VOICE_STT_BASE_URL", base.as_str()),
        ("MINDBOT_VOICE_LLM_BASE_URL", base.as_str()),
        // The test responder calls tools (the local model's default is off).
        ("MINDBOT_VOICE_LLM_TOOLS", "true"),
        ("MINDBOT_VOICE_TTS_DEFAULT_BASE_URL", base.as_str()),
        ("MINDBOT_WORKER_USER_GRACE_SECONDS", "2"),
    ]);
    let (_worker, port) = e2e::worker(&pool, &agent_name, &env).await;
    let api = ApiServer::at(port);

    // The owner makes a persona whose calculator and voice style are premium;
    // an unknown premium feature is refused, naming the entry.
    let owner = user(&pool).await;
    let mut body = persona_body("numbers-coach", json!("1.0"));
    body["tools"] = json!(["calculator"]);
    body["session_time_limit"] = json!(20);
    body["premium_session_time_limit"] = json!(60);
    body["premium_features"] = json!(["calculator", "reading_list_export"]);
    let e = api.post("/v1/me/personas", Some(&token(owner)), &body).await.error(422, "invalid_field");
    assert_eq!(e["field"], "premium_features[1]", "{e}");
    body["premium_features"] = json!(["calculator", "voice.style"]);
    let e = api.post("/v1/me/personas", Some(&token(owner)), &body).await.error(422, "invalid_field");
    assert_eq!(e["field"], "premium_session_time_limit", "set but not listed as a premium feature: {e}");
    body["premium_features"] = json!(["calculator", "voice.style", "premium_session_time_limit"]);
    let r = api.post("/v1/me/personas", Some(&token(owner)), &body).await;
    assert_eq!(r.status, 201, "{}", r.body);

    let free = user(&pool).await;
    card(&pool, free, 10).await;
    let premium = premium_user(&pool).await;
    card(&pool, premium, 10).await;

    // The persona list says what the free user goes without; nothing for the premium one.
    let listed = |u: Uuid| {
        let api = &api;
        async move {
            let list = api.get("/v1/personas", Some(&token(u))).await.json();
            list["personas"].as_array().unwrap().iter().find(|p| p["slug"] == "numbers-coach").cloned().unwrap()
        }
    };
    let (for_free, for_premium) = (listed(free).await, listed(premium).await);
    assert_eq!(for_free["premium_left_out"], json!(["calculator", "voice.style", "premium_session_time_limit"]));
    assert_eq!(for_premium["premium_left_out"], json!([]));
    assert_eq!(
        (for_free["premium_session_time_limit"].as_i64(), for_premium["premium_session_time_limit"].as_i64()),
        (None, Some(60)),
        "{for_free} {for_premium}"
    );

    // The free user asks for a premium voice style: the session starts
    // anyway, without it, and the started message names what was left out.
    let session = |u: Uuid| {
        let api = &api;
        async move {
            let r = api
                .post(
                    "/v1/sessions",
                    Some(&token(u)),
                    &json!({"persona": "numbers-coach", "overrides": {"voice.style": "bright"}}),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
            r.json()["token"].as_str().unwrap().to_string()
        }
    };
    let report = e2e::python(
        "participant.py",
        &["--token", &session(free).await, "--expect-data", "mindbot.session", "--stay", "4"],
    )
    .stdout(Stdio::piped())
    .output()
    .await
    .unwrap();
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    let started = e2e::messages(&report, "mindbot.session").into_iter().next().expect("a started message");
    assert_eq!(started["type"], "started", "{report}");
    assert_eq!(
        started["premium_left_out"],
        json!(["calculator", "voice.style", "premium_session_time_limit"]),
        "{started}"
    );

    reset().await;
    let heard = ask(&session(free).await).await;
    assert!(heard["turns"][0]["latency_ms"].as_f64().is_some(), "the agent answered: {heard}");
    let calls = offered().await;
    assert!(!calls.is_empty(), "the model was asked");
    for tools in &calls {
        assert!(!tools.contains(&"calculator".to_string()), "no premium tool for a free user: {calls:?}");
        assert!(tools.contains(&"get_balance".to_string()), "{calls:?}");
    }

    reset().await;
    let heard = ask(&session(premium).await).await;
    assert!(heard["turns"][0]["latency_ms"].as_f64().is_some(), "the agent answered: {heard}");
    let calls = offered().await;
    assert!(!calls.is_empty(), "the model was asked");
    for tools in &calls {
        assert!(tools.contains(&"calculator".to_string()), "the premium user gets the calculator: {calls:?}");
    }
}
