//! Resolution and access rules against a real PostgreSQL, one fresh
//! database per test (`DATABASE_URL` must point at a server where the role
//! may create databases; `scripts/postgres.sh` starts one).

use chrono::{DateTime, Duration, Utc};
use mindbot_schema::UserId;
use personas::usage::user_level;
use personas::{
    check_access, minutes_used_today, resolve, AccessFacts, AccessLevel, AccessPolicy, Catalog, Denial, PersonaError,
    PersonaSource, PlanLevels,
};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

async fn user(pool: &PgPool, email: &str) -> UserId {
    sqlx::query_scalar::<_, Uuid>(
        "INSERT INTO users (email, full_name, password_hash) VALUES ($1, 'Test User', 'x') RETURNING id",
    )
    .bind(email)
    .fetch_one(pool)
    .await
    .map(UserId)
    .unwrap()
}

/// A valid custom persona config: a catalog persona's JSON with a new voice.
fn custom_config() -> Value {
    let mut config = serde_json::to_value(Catalog::builtin().get("professor-ada").unwrap()).unwrap();
    config["voice"]["style"] = json!("custom-voice");
    config
}

async fn custom_persona(pool: &PgPool, owner: UserId, slug: &str, config: Value, active: bool) -> Uuid {
    sqlx::query_scalar::<_, Uuid>(
        "INSERT INTO custom_personas (user_id, slug, name, config, system_prompt, is_active, usage_count, rating) \
         VALUES ($1, $2, 'My Tutor', $3, 'You are my own tutor. Be brief.', $4, 3, 4.25) RETURNING id",
    )
    .bind(owner)
    .bind(slug)
    .bind(config)
    .bind(active)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn persona_session(pool: &PgPool, user: UserId, slug: &str, minutes: Option<i32>, created_at: &str) {
    sqlx::query(
        "INSERT INTO persona_sessions (user_id, persona_slug, session_id, duration_minutes, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(user)
    .bind(slug)
    .bind(Uuid::new_v4().to_string())
    .bind(minutes)
    .bind(at(created_at))
    .execute(pool)
    .await
    .unwrap();
}

async fn subscription(pool: &PgPool, user: UserId, plan: &str, status: &str, start: DateTime<Utc>, end: DateTime<Utc>) {
    sqlx::query(
        "INSERT INTO user_subscriptions (user_id, plan_id, status, current_period_start, current_period_end) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(user)
    .bind(plan)
    .bind(status)
    .bind(start)
    .bind(end)
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn an_active_custom_persona_resolves_before_the_catalog(pool: PgPool) {
    let owner = user(&pool, "owner@example.com").await;
    let id = custom_persona(&pool, owner, "my-tutor", custom_config(), true).await;
    let resolved = resolve(&pool, &Catalog::builtin(), "my-tutor").await.unwrap();
    assert_eq!(resolved.source, PersonaSource::Custom { id, owner });
    let config = resolved.config;
    assert_eq!((config.slug.as_str(), config.name.as_str()), ("my-tutor", "My Tutor"), "columns win");
    assert_eq!(config.system_prompt, "You are my own tutor. Be brief.");
    assert_eq!((config.usage_count, config.rating, config.voice.style.as_str()), (3, 4.25, "custom-voice"));

    // Custom first even when a built-in persona has the same slug.
    let id = custom_persona(&pool, owner, "professor-ada", custom_config(), true).await;
    let resolved = resolve(&pool, &Catalog::builtin(), "professor-ada").await.unwrap();
    assert_eq!(resolved.source, PersonaSource::Custom { id, owner });
}

#[sqlx::test(migrations = "../migrations")]
async fn a_slug_without_a_custom_persona_falls_back_to_the_catalog(pool: PgPool) {
    let resolved = resolve(&pool, &Catalog::builtin(), "trivia-host").await.unwrap();
    assert_eq!(resolved.source, PersonaSource::Catalog);
    assert_eq!(&resolved.config, Catalog::builtin().get("trivia-host").unwrap());
    let err = resolve(&pool, &Catalog::builtin(), "nobody-here").await.unwrap_err();
    assert!(matches!(err, PersonaError::NotFound { ref slug } if slug == "nobody-here"), "{err:?}");
    let err = resolve(&pool, &Catalog::builtin(), "Not A Slug'; --").await.unwrap_err();
    assert!(matches!(err, PersonaError::NotFound { .. }), "{err:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn inactive_personas_do_not_resolve(pool: PgPool) {
    let owner = user(&pool, "owner@example.com").await;
    custom_persona(&pool, owner, "switched-off", custom_config(), false).await;
    let err = resolve(&pool, &Catalog::builtin(), "switched-off").await.unwrap_err();
    assert!(matches!(err, PersonaError::NotFound { ref slug } if slug == "switched-off"), "{err:?}");

    let mut config = custom_config();
    config["is_active"] = json!(false);
    custom_persona(&pool, owner, "off-in-config", config, true).await;
    let err = resolve(&pool, &Catalog::builtin(), "off-in-config").await.unwrap_err();
    assert!(matches!(err, PersonaError::NotFound { .. }), "{err:?}");

    // An inactive custom persona does not hide the built-in one.
    custom_persona(&pool, owner, "story-weaver", custom_config(), false).await;
    let resolved = resolve(&pool, &Catalog::builtin(), "story-weaver").await.unwrap();
    assert_eq!(resolved.source, PersonaSource::Catalog);

    let mut retired = Catalog::builtin().get("trivia-host").unwrap().clone();
    retired.is_active = false;
    let catalog = Catalog::new([retired]).unwrap();
    let err = resolve(&pool, &catalog, "trivia-host").await.unwrap_err();
    assert!(matches!(err, PersonaError::NotFound { .. }), "{err:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_stored_persona_with_a_bad_config_names_slug_and_field(pool: PgPool) {
    let owner = user(&pool, "owner@example.com").await;
    let mut config = custom_config();
    config["age_restriction"] = json!(300);
    custom_persona(&pool, owner, "too-old", config, true).await;
    let err = resolve(&pool, &Catalog::builtin(), "too-old").await.unwrap_err();
    assert_eq!(err.field(), Some("age_restriction"));
    assert!(err.to_string().contains("too-old"), "{err}");
}

#[sqlx::test(migrations = "../migrations")]
async fn daily_usage_counts_the_local_day_in_the_configured_time_zone(pool: PgPool) {
    let tz = chrono_tz::America::New_York;
    let me = user(&pool, "me@example.com").await;
    let someone_else = user(&pool, "else@example.com").await;
    // 23:59 on 10 March in New York: the day before, though the same UTC date.
    persona_session(&pool, me, "fitness-coach", Some(20), "2025-03-11T03:59:00Z").await;
    // 00:01 and 10:00 on 11 March in New York.
    persona_session(&pool, me, "fitness-coach", Some(15), "2025-03-11T04:01:00Z").await;
    persona_session(&pool, me, "fitness-coach", Some(10), "2025-03-11T14:00:00Z").await;
    // Still running: no duration yet.
    persona_session(&pool, me, "fitness-coach", None, "2025-03-11T14:30:00Z").await;
    // Other personas, other users, and the next local day do not count.
    persona_session(&pool, me, "trivia-host", Some(40), "2025-03-11T12:00:00Z").await;
    persona_session(&pool, someone_else, "fitness-coach", Some(40), "2025-03-11T12:00:00Z").await;
    persona_session(&pool, me, "fitness-coach", Some(40), "2025-03-12T04:00:00Z").await;

    let now = at("2025-03-11T15:00:00Z");
    assert_eq!(minutes_used_today(&pool, me, "fitness-coach", tz, now).await.unwrap(), 25);
    assert_eq!(minutes_used_today(&pool, me, "fitness-coach", chrono_tz::UTC, now).await.unwrap(), 45);
    assert_eq!(minutes_used_today(&pool, me, "fitness-coach", tz, at("2025-03-11T03:59:30Z")).await.unwrap(), 20);

    let policy = AccessPolicy { plans: PlanLevels::default(), timezone: tz };
    subscription(&pool, me, "starter", "active", now - Duration::days(1), now + Duration::days(29)).await;
    let coach = Catalog::builtin().get("fitness-coach").unwrap().clone();
    let facts = AccessFacts::load(&pool, &policy, me, "fitness-coach", None, now).await.unwrap();
    let granted = check_access(&coach, &facts, None).unwrap();
    let daily = granted.daily.unwrap();
    assert_eq!((daily.limit_minutes, daily.used_minutes, daily.left_minutes), (60, 25, 35));

    persona_session(&pool, me, "fitness-coach", Some(35), "2025-03-11T14:45:00Z").await;
    let facts = AccessFacts::load(&pool, &policy, me, "fitness-coach", None, now).await.unwrap();
    let err = check_access(&coach, &facts, None).unwrap_err();
    assert!(
        matches!(err, PersonaError::Denied(Denial::DailyLimitReached { limit_minutes: 60, used_minutes: 60 })),
        "{err:?}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn only_active_or_trialing_subscriptions_in_their_period_grant_a_level(pool: PgPool) {
    let plans = PlanLevels::new([("pro", AccessLevel::Premium), ("starter", AccessLevel::Basic)]);
    let now = at("2025-06-15T12:00:00Z");
    let (month_ago, in_a_month) = (now - Duration::days(30), now + Duration::days(30));
    let cases = [
        ("active-in-period", "active", month_ago, in_a_month, AccessLevel::Premium),
        ("trialing", "trialing", month_ago, in_a_month, AccessLevel::Premium),
        ("canceled", "canceled", month_ago, in_a_month, AccessLevel::Free),
        ("past-due", "past_due", month_ago, in_a_month, AccessLevel::Free),
        ("expired", "active", month_ago - Duration::days(30), now, AccessLevel::Free),
        ("not-started", "trialing", now + Duration::seconds(1), in_a_month, AccessLevel::Free),
    ];
    for (name, status, start, end, expected) in cases {
        let who = user(&pool, &format!("{name}@example.com")).await;
        subscription(&pool, who, "pro", status, start, end).await;
        assert_eq!(user_level(&pool, &plans, who, now).await.unwrap(), expected, "{name}");
    }

    let nobody = user(&pool, "no-subscription@example.com").await;
    assert_eq!(user_level(&pool, &plans, nobody, now).await.unwrap(), AccessLevel::Free);
    let mixed = user(&pool, "mixed@example.com").await;
    subscription(&pool, mixed, "pro", "canceled", month_ago, in_a_month).await;
    subscription(&pool, mixed, "brand-new-plan", "active", month_ago, in_a_month).await;
    assert_eq!(user_level(&pool, &plans, mixed, now).await.unwrap(), AccessLevel::Basic, "unknown plan is basic");

    let policy = AccessPolicy { plans, timezone: chrono_tz::Europe::Paris };
    let coach = Catalog::builtin().get("executive-coach").unwrap().clone();
    let facts = AccessFacts::load(&pool, &policy, mixed, "executive-coach", Some(40), now).await.unwrap();
    let err = check_access(&coach, &facts, None).unwrap_err();
    assert!(
        matches!(
            err,
            PersonaError::Denied(Denial::AccessDenied { required: AccessLevel::Premium, have: AccessLevel::Basic })
        ),
        "{err:?}"
    );
}
