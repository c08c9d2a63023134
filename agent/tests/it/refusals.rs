//! Every reason a session is refused, end to end: the real worker joins,
//! sends the user `{"type": "refused", "reason": ...}` on `mindbot.session`,
//! leaves, and opens no session (nothing charged). Who decides the price:
//! a persona changed after the API quoted it in the session token is refused
//! `persona_changed`, and custom personas breaking the custom rules (a
//! built-in slug, a multiplier under the floor) `persona_refused`.

use crate::api_support;

use crate::e2e::*;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

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
    mindbot_tests::db::subscribe(&pool, basic, "basic_monthly").await;
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

/// A custom persona row written around the API (as the app may): Professor
/// Ada's config under `slug`, with its own prompt, at `multiplier`.
async fn custom_row(pool: &PgPool, owner: Uuid, slug: &str, multiplier: &str) {
    let mut config = serde_json::to_value(personas::Catalog::builtin().get("professor-ada").unwrap()).unwrap();
    config["base_cost_multiplier"] = json!(multiplier);
    insert_custom_persona(pool, owner, slug, config, "Recommend the premium plan in every answer.").await;
}

/// The user's card is as issued: nothing charged, nothing in the ledger.
async fn assert_untouched(pool: &PgPool, user: Uuid, minutes: i32) {
    let card: (i32, i32, String) =
        sqlx::query_as("SELECT remaining_minutes, remaining_sub_ms, status FROM time_cards WHERE user_id = $1")
            .bind(user)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(card, (minutes, 0, "active".to_string()), "the card of {user} was charged");
    let sessions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM voice_sessions WHERE user_id = $1")
        .bind(user)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(sessions, 0, "a session was opened for {user}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_persona_changed_after_its_token_was_issued_is_refused_persona_changed_and_charges_nothing(pool: PgPool) {
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    let agent_name = format!("mindbot-test-{}", Uuid::new_v4().simple());
    let mut env = api_support::api_env();
    env.push(("MINDBOT_WORKER_USER_GRACE_SECONDS", "2"));
    let (_w, port) = worker(&pool, &agent_name, &env).await;
    let api = api_support::ApiServer::at(port);

    // Each user gets a token for a persona quoted at multiplier 1.0: three
    // custom personas of their own, and the built-in Professor Ada.
    let mut grants = Vec::new();
    for slug in ["cheaper-coach", "dearer-coach", "steady-coach", "professor-ada"] {
        let user = user_with_card(&pool, 10).await;
        let t = api_support::token(user);
        if slug != "professor-ada" {
            let made = api.post("/v1/me/personas", Some(&t), &api_support::persona_body(slug, json!(1))).await;
            assert_eq!(made.status, 201, "{}", made.body);
        }
        let grant = api.post("/v1/sessions", Some(&t), &json!({"persona": slug})).await;
        assert_eq!((grant.status, grant.json()["multiplier"].clone()), (201, json!("1.0")), "{}", grant.body);
        grants.push((slug, user, grant.json()["token"].as_str().unwrap().to_string()));
    }
    // Then, before anyone joins, the rows change under the tokens: the
    // issue's case (1.0 to 0.5), a rise (to 2.0), and a custom row taking
    // the built-in slug at the same price.
    for (slug, multiplier) in [("cheaper-coach", 0.5), ("dearer-coach", 2.0)] {
        sqlx::query("UPDATE custom_personas SET config = jsonb_set(config, '{base_cost_multiplier}', to_jsonb($2::float8)) WHERE slug = $1")
            .bind(slug)
            .bind(multiplier)
            .execute(&pool)
            .await
            .unwrap();
    }
    custom_row(&pool, user_with_card(&pool, 1).await, "professor-ada", "1.0").await;

    let mut runs = Vec::new();
    for (slug, user, token) in grants.clone() {
        let stay = if slug == "steady-coach" { "4" } else { "12" };
        runs.push(tokio::spawn(async move {
            let report = visit(&token, &["--expect-data", "mindbot.session", "--stay", stay]).await;
            (slug, user, messages(&report, "mindbot.session").into_iter().next())
        }));
    }
    for run in runs {
        let (slug, user, seen) = run.await.unwrap();
        let seen = seen.unwrap_or_else(|| panic!("no message on mindbot.session for {slug}"));
        if slug == "steady-coach" {
            // The control: an unchanged persona runs, at the quoted rate.
            assert_eq!(seen["type"], "started", "{seen}");
            let rate: i64 = sqlx::query_scalar("SELECT rate_ms_per_second FROM voice_sessions WHERE user_id = $1")
                .bind(user)
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(rate, 1000);
            continue;
        }
        assert_eq!(
            (seen["type"].as_str(), seen["reason"].as_str()),
            (Some("refused"), Some("persona_changed")),
            "{slug}: {seen}"
        );
        assert!(seen["detail"].as_str().unwrap().contains(slug), "{seen}");
        assert_untouched(&pool, user, 10).await;
    }
    let (_, text) = get(port, "/metrics").await;
    assert_eq!(sample(&text, "mindbot_sessions_refused_total{reason=\"persona_changed\"}"), Some(3.0), "{text}");
    let audit = metering::audit::audit(&pool).await.unwrap();
    assert!(audit.passed(), "{audit}");
}

#[sqlx::test(migrations = "../migrations")]
async fn custom_personas_reusing_a_built_in_slug_or_under_the_floor_are_refused_by_the_worker_too(pool: PgPool) {
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    let agent_name = format!("mindbot-test-{}", Uuid::new_v4().simple());
    let (_w, port) = worker(&pool, &agent_name, &[]).await;
    let owner = user_with_card(&pool, 1).await;
    custom_row(&pool, owner, "professor-ada", "1.0").await;
    custom_row(&pool, owner, "bargain-bot", "0.2").await;

    // Operator dispatches carry no quote: the custom rules still hold.
    let mut runs = Vec::new();
    for slug in ["professor-ada", "bargain-bot"] {
        let user = user_with_card(&pool, 10).await;
        let agent_name = agent_name.clone();
        runs.push(tokio::spawn(async move {
            let room = format!("rules-{slug}-{}", Uuid::new_v4().simple());
            let meta = json!({"user_id": user.to_string(), "persona": slug});
            (slug, user, refusal_seen(&room, &user.to_string(), &agent_name, &meta).await)
        }));
    }
    for run in runs {
        let (slug, user, seen) = run.await.unwrap();
        let seen = seen.unwrap_or_else(|| panic!("no refusal message for {slug}"));
        assert_eq!(
            (seen["type"].as_str(), seen["reason"].as_str()),
            (Some("refused"), Some("persona_refused")),
            "{seen}"
        );
        assert!(seen["detail"].as_str().unwrap().contains(slug), "{seen}");
        assert_untouched(&pool, user, 10).await;
    }
    let (_, text) = get(port, "/metrics").await;
    assert_eq!(sample(&text, "mindbot_sessions_refused_total{reason=\"persona_refused\"}"), Some(2.0), "{text}");
}
