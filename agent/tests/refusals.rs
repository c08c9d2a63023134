//! Every reason a session is refused, end to end: the real worker joins,
//! sends the user `{"type": "refused", "reason": ...}` on `mindbot.session`,
//! leaves, and opens no session (nothing charged).

mod e2e;

use e2e::*;
use serde_json::{json, Value};
use sqlx::PgPool;

/// Joins as `identity` with a token dispatching `agent_name` with `metadata`
/// and returns the refusal the user saw.
async fn refusal_seen(room: &str, identity: &str, agent_name: &str, metadata: &Value) -> Option<Value> {
    let token = dispatch_token(room, identity, agent_name, metadata).await;
    let report = visit(&token, &["--expect-data", "mindbot.session", "--stay", "12"]).await;
    messages(&report, "mindbot.session").into_iter().next()
}

#[sqlx::test(migrations = "../migrations")]
async fn every_refusal_reason_reaches_the_user_and_charges_nothing(pool: PgPool) {
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    let agent_name = format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    let (_w, port) = worker(&pool, &agent_name, &[]).await;

    let funded = user_with_card(&pool, 10).await.to_string();
    let inactive = user_with_card(&pool, 10).await;
    sqlx::query("UPDATE users SET is_active = FALSE WHERE id = $1").bind(inactive).execute(&pool).await.unwrap();
    // Trivia Quinn allows 120 minutes a day; this user has had them.
    let spent = user_with_card(&pool, 10).await;
    sqlx::query(
        "INSERT INTO persona_sessions (user_id, persona_slug, session_id, duration_minutes) VALUES ($1, 'trivia-host', 'old', 120)",
    )
    .bind(spent)
    .execute(&pool)
    .await
    .unwrap();
    // Basic level (the 18+ persona needs it), but no age claim.
    let basic = user_with_card(&pool, 10).await;
    sqlx::query(
        "INSERT INTO user_subscriptions (user_id, plan_id, status, current_period_start, current_period_end) \
         VALUES ($1, 'basic_monthly', 'active', NOW() - INTERVAL '1 day', NOW() + INTERVAL '29 days')",
    )
    .bind(basic)
    .execute(&pool)
    .await
    .unwrap();
    let basic = basic.to_string();
    let stranger = uuid::Uuid::new_v4().to_string();

    let cases: Vec<(&str, String, Value)> = vec![
        ("unknown_user", stranger.clone(), json!({"user_id": stranger, "persona": "professor-ada"})),
        ("inactive_user", inactive.to_string(), json!({"user_id": inactive.to_string()})),
        ("unknown_persona", funded.clone(), json!({"user_id": funded, "persona": "no-such-persona"})),
        ("access_denied", funded.clone(), json!({"user_id": funded, "persona": "executive-coach"})),
        ("age_restricted", basic.clone(), json!({"user_id": basic, "persona": "late-night-comic"})),
        ("daily_limit", spent.to_string(), json!({"user_id": spent.to_string(), "persona": "trivia-host"})),
        (
            "invalid_overrides",
            funded.clone(),
            json!({"user_id": funded, "persona": "professor-ada", "overrides": {"base_cost_multiplier": 0.01}}),
        ),
        // JSON, but not the metadata's shape: refused, never guessed.
        ("malformed_metadata", funded.clone(), json!({"user_id": 42, "persona": ["x"]})),
    ];
    let mut runs = Vec::new();
    for (i, (reason, identity, metadata)) in cases.into_iter().enumerate() {
        let agent_name = agent_name.clone();
        runs.push(tokio::spawn(async move {
            let room = format!("refuse-{i}-{}", uuid::Uuid::new_v4().simple());
            (reason, refusal_seen(&room, &identity, &agent_name, &metadata).await)
        }));
    }
    for run in runs {
        let (reason, seen) = run.await.unwrap();
        let seen = seen.unwrap_or_else(|| panic!("no refusal message for {reason}"));
        assert_eq!((seen["type"].as_str(), seen["reason"].as_str()), (Some("refused"), Some(reason)), "{seen}");
        assert!(!seen["detail"].as_str().unwrap_or("").is_empty(), "{seen}");
    }
    let sessions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM voice_sessions").fetch_one(&pool).await.unwrap();
    assert_eq!(sessions, 0, "no refusal opens a session");
    let (_, text) = get(port, "/metrics").await;
    for reason in
        ["unknown_user", "inactive_user", "access_denied", "age_restricted", "daily_limit", "malformed_metadata"]
    {
        let line = format!("mindbot_sessions_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&text, &line), Some(1.0), "{reason}: {text}");
    }
}
