//! `mindbot-agent demo`: a user to try the worker with. Makes (once) a demo
//! user, tops them up with a five-minute card when their balance is under a minute,
//! and prints a room name and a participant token whose room configuration
//! dispatches this worker's agent with the user's metadata. The web app's
//! dev sign-in (`api.dev_login`) signs in as the same user ([`demo_user`]).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use metering::{cards, Millis, UserId};

use crate::config::Config;
use crate::session::{dispatch_token, JobMetadata};

const DEMO_EMAIL: &str = "demo@mindbot.invalid";

/// The demo user (made once), topped up with a five-minute card (through
/// `metering`) when their balance is under a minute.
pub async fn demo_user(pool: &sqlx::PgPool) -> Result<UserId> {
    let user = sqlx::query_scalar!(
        r#"INSERT INTO users (email, full_name, password_hash, email_verified) VALUES ($1, 'Demo User', '!', TRUE)
           ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email RETURNING id AS "id: UserId""#,
        DEMO_EMAIL
    )
    .fetch_one(pool)
    .await
    .context("creating the demo user")?;
    let balance = metering::balance::balance(pool, user).await?;
    if balance.spendable < Millis(60_000) {
        // A demo seed, not a sale: an active five-minute card straight away.
        cards::grant(pool, user, 5).await.context("giving the demo user a card")?;
    }
    Ok(user)
}

pub async fn demo(config: &Config) -> Result<ExitCode> {
    let pool = config.database.connect().await?;
    let user = demo_user(&pool).await?;
    let balance = metering::balance::balance(&pool, user).await?;
    let room = format!("demo-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    // Quoted like the API's tokens: the demo user pays the price printed here.
    let slug = &config.personas.default;
    let catalog = personas::Catalog::builtin();
    let persona = personas::resolve_for_session(&pool, &catalog, &config.personas.custom_rules(), slug, None)
        .await
        .with_context(|| format!("resolving the default persona {slug:?}"))?;
    let metadata = JobMetadata {
        user_id: Some(user.to_string()),
        persona: Some(slug.clone()),
        quote: Some(personas::Quote::of(&persona)),
        ..Default::default()
    };
    let token = dispatch_token(
        &config.livekit,
        &user.to_string(),
        "Demo User",
        &room,
        &metadata,
        Duration::from_secs(24 * 3600),
    )
    .context("signing the demo token")?;
    println!("demo user {user} ({DEMO_EMAIL}): balance {}", balance.spendable);
    println!("persona:     {slug} at multiplier {}", persona.config.base_cost_multiplier.decimal_text());
    println!("livekit url: {}", config.livekit.url);
    println!("room:        {room}");
    println!("token:       {token}");
    println!("join with any LiveKit client, e.g. the project's Python client:");
    println!(
        "  .cache/venv/bin/python tests/clients/participant.py --url {} --token <token> --stay 60",
        config.livekit.url
    );
    Ok(ExitCode::SUCCESS)
}
