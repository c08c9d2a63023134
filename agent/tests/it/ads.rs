//! Rewarded ads end to end: the real worker serving the API (`mindbot-agent
//! run` with api.enabled), the real PostgreSQL, the LiveKit server and the
//! Python end user. A signed rewarded view earns time that pays a session on
//! an ad-supported persona and not on another; a replayed callback and an
//! unsigned report earn nothing; the daily cap holds; the balance messages
//! and endpoint say what is earned; the report and the audit agree.

use crate::e2e;

use crate::api_support::*;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

const AD_SECRET: &str = "ad-callback-test-secret";

/// Posts an ad callback for `user`, signed now (or with `secret`), and its raw body.
async fn callback(api: &ApiServer, secret: &str, body: &Value) -> Reply {
    let text = body.to_string();
    let sig = stripe_signature(secret, chrono::Utc::now().timestamp(), &text);
    let headers = [("Content-Type", "application/json"), ("X-Mindbot-Ad-Signature", sig.as_str())];
    request(api.port, "POST", "/v1/webhooks/ads", &headers, Some(text.as_bytes())).await
}

fn view(user: Uuid, id: &str) -> Value {
    json!({"user_id": user, "ad_view_id": id, "ad_id": "ad-42", "ad_type": "rewarded_video",
           "persona": "trivia-host", "completed": true, "view_duration": 30, "revenue": "0.0125",
           "timestamp": chrono::Utc::now().timestamp()})
}

fn cli(pool: &PgPool, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mindbot-agent"))
        .args(args)
        .env("DATABASE_URL", e2e::url_for(pool))
        .env("MINDBOT_LOG_LEVEL", "warn")
        .output()
        .expect("running mindbot-agent")
}

#[sqlx::test(migrations = "../migrations")]
async fn a_signed_rewarded_view_pays_a_session_on_an_ad_supported_persona_and_not_on_another(pool: PgPool) {
    e2e::ensure("scripts/livekit-server.sh", Some("start"));
    e2e::ensure("scripts/python-env.sh", None);
    let agent_name = format!("mindbot-ads-{}", Uuid::new_v4().simple());
    let mut env = api_env();
    env.extend([
        ("MINDBOT_WORKER_USER_GRACE_SECONDS", "2"),
        ("MINDBOT_ADS_CALLBACK_SECRET", AD_SECRET),
        ("MINDBOT_ADS_REWARD_SECONDS", "60"),
        ("MINDBOT_ADS_DAILY_REWARD_CAP", "120"),
    ]);
    let (_worker, port) = e2e::worker(&pool, &agent_name, &env).await;
    let api = ApiServer::at(port);
    let u = user(&pool).await;
    let t = token(u);
    let earned_ms = async || api.get("/v1/me/balance", Some(&t)).await.json()["earned_ms"].as_i64().unwrap();

    // The app's own report of a completed view is recorded and earns nothing.
    let r = api
        .post(
            "/v1/ads/interactions",
            Some(&t),
            &json!({"ad_id": "ad-42", "ad_type": "rewarded_video",
            "view_duration": 30, "completed": true, "persona": "trivia-host"}),
        )
        .await;
    assert_eq!((r.status, r.json()["earned_seconds"].as_i64()), (201, Some(0)), "{}", r.body);
    assert_eq!(earned_ms().await, 0);
    // A callback signed with another key, or with a bad field, changes nothing.
    callback(&api, "not-the-secret", &view(u, "view-1")).await.error(400, "bad_signature");
    let mut float = view(u, "view-1");
    float["revenue"] = json!(0.0125);
    assert_eq!(callback(&api, AD_SECRET, &float).await.error(422, "invalid_field")["field"], "revenue");
    assert_eq!(earned_ms().await, 0);

    // The ad server vouches for the view: 60 s earned, once however often it says so.
    let signed = view(u, "view-1");
    let r = callback(&api, AD_SECRET, &signed).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.json()["outcome"].as_str(), r.json()["rewarded_seconds"].as_i64()), (Some("rewarded"), Some(60)));
    let r = callback(&api, AD_SECRET, &signed).await;
    assert_eq!((r.status, r.json()["outcome"].as_str()), (200, Some("duplicate")), "{}", r.body);
    let balance = api.get("/v1/me/balance", Some(&t)).await.json();
    assert_eq!((balance["earned_ms"].as_i64(), balance["paid_ms"].as_i64()), (Some(60_000), Some(0)), "{balance}");
    let trivia = balance["personas"].as_array().unwrap().iter().find(|p| p["persona"] == "trivia-host").unwrap();
    // x0.5: 60 s of earned card time is 120 s of talk, all of it earned.
    assert_eq!((trivia["seconds"].as_i64(), trivia["earned_seconds"].as_i64()), (Some(120), Some(120)), "{trivia}");

    // Earned time does not pay on a persona that is not ad-supported.
    api.post("/v1/sessions", Some(&t), &json!({"persona": "professor-ada"})).await.error(402, "insufficient_balance");
    // It does on an ad-supported one, and the balance messages say it is earned.
    let r = api.post("/v1/sessions", Some(&t), &json!({"persona": "trivia-host"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let report = e2e::visit(
        r.json()["token"].as_str().unwrap(),
        &["--expect-data", "mindbot.session", "--expect-data", "mindbot.balance", "--stay", "5"],
    )
    .await;
    let started = e2e::messages(&report, "mindbot.session");
    assert_eq!(
        started.first().map(|m| (m["type"].clone(), m["premium_left_out"].clone())),
        Some((json!("started"), json!([]))),
        "{report}"
    );
    let balance_msg = e2e::messages(&report, "mindbot.balance").into_iter().next().expect("a balance message");
    assert_eq!(balance_msg["earned_ms"].as_i64(), Some(60_000), "{balance_msg}");
    assert_eq!(balance_msg["paid_ms"].as_i64(), Some(0), "{balance_msg}");
    assert_eq!(balance_msg["earned_seconds"], balance_msg["remaining_seconds"], "all remaining time is earned");
    assert_eq!(balance_msg["paid_seconds"].as_i64(), Some(0), "{balance_msg}");

    // Once the session closes, what it charged came from the earned card.
    let mut charged = 0i64;
    for _ in 0..150 {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT status, charged_ms FROM voice_sessions WHERE user_id = $1 AND status <> 'active'")
                .bind(u)
                .fetch_optional(&pool)
                .await
                .unwrap();
        if let Some((_, c)) = row {
            charged = c;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(charged >= 500, "the session was charged: {charged} ms");
    assert_eq!(earned_ms().await, 60_000 - charged, "the earned card paid for it");

    // The daily cap (120 s): a second view earns, a third does not.
    let r = callback(&api, AD_SECRET, &view(u, "view-2")).await;
    assert_eq!(r.json()["outcome"], "rewarded", "{}", r.body);
    let r = callback(&api, AD_SECRET, &view(u, "view-3")).await;
    assert_eq!(
        (r.json()["outcome"].as_str(), r.json()["rewarded_seconds"].as_i64()),
        (Some("daily_cap_reached"), Some(0)),
        "{}",
        r.body
    );
    assert_eq!(earned_ms().await, 120_000 - charged);

    // The operator's report and the audit agree.
    let today = chrono::Utc::now().date_naive().pred_opt().unwrap().to_string();
    let out = cli(&pool, &["ads", "--since", &today]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let line: Vec<&str> =
        text.lines().find(|l| l.starts_with("trivia-host")).expect("a trivia-host line").split_whitespace().collect();
    // persona, reported, views, completions, earned, spent, revenue
    assert_eq!(line[1..5], ["1", "3", "3", "120"], "{text}");
    // Spent card time in whole seconds, rounded as the report rounds (half
    // up): a x0.5 persona charges 500 ms per second lived.
    assert_eq!(line[5], ((charged + 500) / 1000).to_string(), "{text}");
    assert_eq!(line[6], "0.0375", "{text}");
    let out = cli(&pool, &["audit"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for check in ["earned_only_ad_supported", "rewards_within_daily_cap", "one_reward_per_ad_view"] {
        assert!(text.lines().any(|l| l.starts_with("ok") && l.contains(check)), "{check}: {text}");
    }
}
