//! A test's database as the processes under test reach it, and the users,
//! tiers and cards tests start from.
//!
//! Cards are issued and activated through `metering` where a test needs one
//! made the real way ([`issued_card`]); [`active_card`] writes the row the
//! seed's way for tests of the service around it.

use metering::cards::{self, ActivationPolicy};
use metering::records::TimeCard;
use metering::UserId;
use sqlx::PgPool;
use uuid::Uuid;

/// The URL of `pool`'s database (the per-test database `#[sqlx::test]`
/// made), for a process under test: `DATABASE_URL` with the name replaced.
pub fn url_for(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let db = pool.connect_options().get_database().expect("database").to_string();
    format!("{}/{db}", base.rsplit_once('/').expect("URL path").0)
}

/// A new active user named `name`, with a unique email; its id.
pub async fn named_user(pool: &PgPool, name: &str) -> Uuid {
    sqlx::query_scalar("INSERT INTO users (email, full_name, password_hash) VALUES ($1, $2, 'x') RETURNING id")
        .bind(format!("{}@example.test", Uuid::new_v4()))
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Gives `user` an active card of `minutes`, activated now, with a fresh
/// code; its id.
pub async fn active_card(pool: &PgPool, user: Uuid, minutes: i32) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO time_cards (user_id, activation_code, total_minutes, remaining_minutes, status, activated_at) \
         VALUES ($1, $2, $3, $3, 'active', NOW()) RETURNING id",
    )
    .bind(user)
    .bind(cards::generate_code())
    .bind(minutes)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A tier of its own whose cards hold `minutes` minutes; its id.
pub async fn minutes_tier(pool: &PgPool, minutes: i32) -> String {
    let id = format!("tier-{}", Uuid::new_v4().simple());
    sqlx::query("INSERT INTO pricing_tiers (id, name, hours, price_cents, bonus_minutes) VALUES ($1, 'T', 0, 100, $2)")
        .bind(&id)
        .bind(minutes)
        .execute(pool)
        .await
        .unwrap();
    id
}

/// An active card of `minutes` for `user`, issued from a tier of its own and
/// activated through `metering`, without expiry.
pub async fn issued_card(pool: &PgPool, user: UserId, minutes: i32) -> TimeCard {
    let t = minutes_tier(pool, minutes).await;
    let issued = cards::issue(pool, &t, 1, None, None).await.unwrap();
    let policy = ActivationPolicy { validity: None, ..ActivationPolicy::default() };
    cards::activate(pool, &issued[0].activation_code, user, &policy).await.unwrap()
}

/// Puts `user` on `plan` (e.g. `basic_monthly`, `premium_monthly`): an active
/// subscription whose period began yesterday and runs four more weeks.
pub async fn subscribe(pool: &PgPool, user: Uuid, plan: &str) {
    sqlx::query(
        "INSERT INTO user_subscriptions (user_id, plan_id, status, current_period_start, current_period_end) \
         VALUES ($1, $2, 'active', NOW() - INTERVAL '1 day', NOW() + INTERVAL '29 days')",
    )
    .bind(user)
    .bind(plan)
    .execute(pool)
    .await
    .unwrap_or_else(|e| panic!("subscribing {user} to {plan}: {e}"));
}
