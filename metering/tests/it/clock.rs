//! Workers share one clock, the database's: a meter whose own clock runs
//! hours ahead, running its ticks and its reaper beside a correct one, reaps
//! none of the other's live sessions, expires no card early and still lets
//! its cards pay.

use std::time::Duration;

use metering::audit;
use metering::meter::{Clock, Meter, MeterConfig};
use metering::records::CardStatus;
use metering::session::EndReason;
use metering::{CardId, Millis, SessionId, UserId};
use sqlx::PgPool;

use crate::common::*;

/// A card of `user` valid for one more hour by the database's clock.
async fn card_for_an_hour(pool: &PgPool, user: UserId) -> CardId {
    let c = card(pool, user, 10).await;
    sqlx::query("UPDATE time_cards SET expires_at = NOW() + INTERVAL '1 hour' WHERE id = $1")
        .bind(c.id)
        .execute(pool)
        .await
        .unwrap();
    c.id
}

async fn session_status(pool: &PgPool, id: SessionId) -> String {
    sqlx::query_scalar("SELECT status FROM voice_sessions WHERE id = $1").bind(id).fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_worker_whose_clock_runs_two_hours_ahead_reaps_no_live_session_and_expires_no_card_early(pool: PgPool) {
    let (on_time, ahead) = (user(&pool).await, user(&pool).await);
    let on_time_card = card_for_an_hour(&pool, on_time).await;
    let ahead_card = card_for_an_hour(&pool, ahead).await;

    let correct = Meter::start(pool.clone(), fast_config());
    let fast =
        Meter::start(pool.clone(), MeterConfig { clock: Clock::skewed(chrono::Duration::hours(2)), ..fast_config() });
    let live = correct.open(open_spec(on_time, "1")).await.unwrap();
    // The fast worker authorises and charges its own session from a card that
    // its clock would call expired.
    let skewed = fast.open(open_spec(ahead, "1")).await.unwrap();

    // Several reaper rounds (every 500 ms, heartbeat timeout 3 s) and ticks.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    assert_eq!(session_status(&pool, live.id()).await, "active", "the fast worker reaped a live session");
    assert_eq!(session_status(&pool, skewed.id()).await, "active");
    for c in [on_time_card, ahead_card] {
        let status: CardStatus =
            sqlx::query_scalar("SELECT status FROM time_cards WHERE id = $1").bind(c).fetch_one(&pool).await.unwrap();
        assert_eq!(status, CardStatus::Active, "card {c} expired early");
    }
    assert!(skewed.snapshot().spendable > Millis::ZERO);
    assert!(metering::balance::balance(&pool, on_time).await.unwrap().spendable > Millis::ZERO);

    let a = live.close(EndReason::UserLeft).await.unwrap();
    let b = skewed.close(EndReason::UserLeft).await.unwrap();
    assert!(a.duration_seconds.unwrap() >= 3, "{a:?}");
    assert!(b.duration_seconds.unwrap() >= 3, "the fast worker's card paid: {b:?}");
    assert!(card_books(&pool, ahead_card).await.0 >= 3000);
    correct.shutdown().await;
    fast.shutdown().await;
    let report = audit::audit(&pool).await.unwrap();
    assert!(report.passed(), "{report}");
}
