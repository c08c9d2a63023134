//! Shared setup for the metering tests: users, tiers and cards made through
//! the real engine, a meter tuned for short tests, and (from the test kit)
//! a TCP proxy that can cut the meter off from PostgreSQL.
#![allow(dead_code)]

use std::time::Duration;

use metering::meter::{MeterConfig, MeterEvent, MeteredSession};
use metering::records::TimeCard;
use metering::session::OpenSession;
use metering::{Rate, UserId};
use mindbot_tests::db;
use sqlx::PgPool;
use uuid::Uuid;

pub async fn user(pool: &PgPool) -> UserId {
    UserId(db::named_user(pool, "Test User").await)
}

/// A tier whose cards hold `minutes` minutes.
pub async fn tier(pool: &PgPool, minutes: i32) -> String {
    db::minutes_tier(pool, minutes).await
}

/// An active card of `minutes` for `user`, issued and activated the real way.
pub async fn card(pool: &PgPool, user: UserId, minutes: i32) -> TimeCard {
    db::issued_card(pool, user, minutes).await
}

pub fn fast_config() -> MeterConfig {
    MeterConfig {
        tick_interval: Duration::from_millis(250),
        db_grace: Duration::from_secs(2),
        write_timeout: Duration::from_secs(2),
        heartbeat_timeout: Duration::from_secs(3),
        reap_interval: Duration::from_millis(500),
        // Each meter is a worker of its own.
        worker_id: format!("test-worker-{}", Uuid::new_v4().simple()),
        ..MeterConfig::default()
    }
}

pub fn open_spec(user: UserId, multiplier: &str) -> OpenSession {
    OpenSession {
        user,
        session_key: format!("job-{}", Uuid::new_v4().simple()),
        room: format!("room-{}", Uuid::new_v4().simple()),
        persona_slug: "tutor".into(),
        rate: multiplier.parse::<Rate>().unwrap(),
        agent_type: "production".into(),
        worker_id: "test-worker".into(),
        ad_supported: false,
    }
}

/// Waits for a given event, collecting the ones before it.
pub async fn wait_for(s: &mut MeteredSession, want: &MeterEvent, within: Duration) -> Vec<MeterEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.next_event()).await {
            Ok(Some(ev)) => {
                let hit = std::mem::discriminant(&ev) == std::mem::discriminant(want);
                seen.push(ev);
                if hit {
                    return seen;
                }
            }
            Ok(None) => panic!("meter stopped; saw {seen:?}"),
            Err(_) => panic!("no {want:?} within {within:?}; saw {seen:?}"),
        }
    }
}

/// Sum of ledger charges for a card, and its exact spent amount.
pub async fn card_books(pool: &PgPool, card: metering::CardId) -> (i64, i64, String) {
    sqlx::query_as(
        "SELECT COALESCE((SELECT SUM(charged_ms) FROM card_charges WHERE time_card_id = c.id), 0)::int8, \
                c.total_minutes::int8 * 60000 - (c.remaining_minutes::int8 * 60000 + c.remaining_sub_ms), c.status \
         FROM time_cards c WHERE c.id = $1",
    )
    .bind(card)
    .fetch_one(pool)
    .await
    .unwrap()
}

pub use mindbot_tests::proxy::{pg_addr, Proxy};
