//! Rewarded ad views against the real PostgreSQL: a confirmed view earns an
//! earned card that only ad-supported sessions draw (before paid cards), one
//! reward per view id, at most the daily cap, and the audit covers it all.

use std::time::Duration;

use metering::audit;
use metering::meter::{Meter, MeterEvent};
use metering::rewards::{self, ConfirmedView, NoReward, RewardOutcome, RewardPolicy};
use metering::session::EndReason;
use metering::{Millis, UserId};
use sqlx::PgPool;

use crate::common::*;

fn policy(reward_seconds: i32, cap: i32) -> RewardPolicy {
    RewardPolicy {
        reward_seconds,
        daily_cap_seconds: cap,
        validity: Some(chrono::Duration::days(30)),
        timezone: "Europe/Paris".into(),
        rewarded_types: vec!["rewarded_video".into()],
    }
}

fn view(user: UserId, id: &str) -> ConfirmedView {
    ConfirmedView {
        user,
        ad_view_id: id.into(),
        ad_id: "ad-1".into(),
        ad_type: "rewarded_video".into(),
        persona: Some("trivia-host".into()),
        view_duration: 30,
        completed: true,
        revenue: "0.0125".into(),
    }
}

async fn audit_passes(pool: &PgPool) {
    let report = audit::audit(pool).await.unwrap();
    assert!(report.passed(), "{report}");
}

#[sqlx::test(migrations = "../migrations")]
async fn earned_time_pays_first_on_ad_supported_sessions_and_never_on_others(pool: PgPool) {
    let u = user(&pool).await;
    let out = rewards::confirm_view(&pool, &view(u, "view-1"), &policy(60, 600)).await.unwrap();
    let RewardOutcome::Rewarded { card: earned, seconds: 60, earned_today: 60, .. } = out else {
        panic!("a completed rewarded view earns: {out:?}")
    };
    let meter = Meter::start(pool.clone(), fast_config());
    // Only earned time: a persona that is not ad-supported is refused.
    let e = meter.open(open_spec(u, "10")).await.err().expect("earned time does not pay here");
    assert!(matches!(e, metering::Error::InsufficientBalance { available: Millis(0), .. }), "{e:?}");

    let paid = card(&pool, u, 1).await;
    let mut ad = open_spec(u, "10");
    ad.ad_supported = true;
    let s = meter.open(ad).await.unwrap();
    assert_eq!(s.snapshot().spendable, Millis(120_000));
    assert_eq!(s.snapshot().earned, Millis(60_000));
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let row = s.close(EndReason::UserLeft).await.unwrap();
    let secs = row.duration_seconds.unwrap() as i64;
    assert!(secs >= 3, "{row:?}");
    // 10x: each second is 10 s of card, all from the earned card first.
    assert_eq!(card_books(&pool, earned).await.0, secs * 10_000);
    assert_eq!(card_books(&pool, paid.id).await.0, 0, "paid time waits until earned time is spent");

    // A session on a persona that is not ad-supported draws the paid card only.
    let s = meter.open(open_spec(u, "10")).await.unwrap();
    assert_eq!(s.snapshot().earned, Millis(0));
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let row = s.close(EndReason::UserLeft).await.unwrap();
    let secs2 = row.duration_seconds.unwrap() as i64;
    assert_eq!(card_books(&pool, earned).await.0, secs * 10_000, "earned time untouched");
    assert_eq!(card_books(&pool, paid.id).await.0, secs2 * 10_000);
    meter.shutdown().await;
    audit_passes(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn an_ad_supported_session_spends_earned_then_paid_time_to_the_exact_end(pool: PgPool) {
    let u = user(&pool).await;
    rewards::confirm_view(&pool, &view(u, "view-a"), &policy(60, 600)).await.unwrap();
    card(&pool, u, 1).await;
    let meter = Meter::start(pool.clone(), fast_config());
    let mut ad = open_spec(u, "40"); // 120 s of card at 40x: 3 s
    ad.ad_supported = true;
    let mut s = meter.open(ad).await.unwrap();
    wait_for(&mut s, &MeterEvent::Exhausted, Duration::from_secs(10)).await;
    let row = s.close(EndReason::BalanceExhausted).await.unwrap();
    let charged: i64 = sqlx::query_scalar("SELECT charged_ms FROM voice_sessions WHERE id = $1")
        .bind(row.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(charged, 120_000, "both cards spent to zero, nothing more");
    meter.shutdown().await;
    audit_passes(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_replayed_view_earns_once_and_the_daily_cap_holds(pool: PgPool) {
    let u = user(&pool).await;
    let p = policy(60, 120);
    let first = rewards::confirm_view(&pool, &view(u, "view-1"), &p).await.unwrap();
    assert!(matches!(first, RewardOutcome::Rewarded { .. }), "{first:?}");
    let again = rewards::confirm_view(&pool, &view(u, "view-1"), &p).await.unwrap();
    assert!(matches!(again, RewardOutcome::AlreadyRecorded { .. }), "{again:?}");
    let second = rewards::confirm_view(&pool, &view(u, "view-2"), &p).await.unwrap();
    assert!(matches!(second, RewardOutcome::Rewarded { earned_today: 120, .. }), "{second:?}");
    let third = rewards::confirm_view(&pool, &view(u, "view-3"), &p).await.unwrap();
    assert!(
        matches!(third, RewardOutcome::NotRewarded { why: NoReward::DailyCapReached, earned_today: 120, .. }),
        "{third:?}"
    );
    let mut skipped = view(u, "view-4");
    skipped.completed = false;
    let r = rewards::confirm_view(&pool, &skipped, &p).await.unwrap();
    assert!(matches!(r, RewardOutcome::NotRewarded { why: NoReward::NotCompleted, .. }), "{r:?}");
    let mut banner = view(u, "view-5");
    banner.ad_type = "banner".into();
    let r = rewards::confirm_view(&pool, &banner, &p).await.unwrap();
    assert!(matches!(r, RewardOutcome::NotRewarded { why: NoReward::NotRewardedType, .. }), "{r:?}");

    let b = metering::balance::balance(&pool, u).await.unwrap();
    assert_eq!((b.funds.earned, b.funds.paid), (Millis(120_000), Millis(0)), "two rewards, no more");
    let (views, revenue): (i64, String) = sqlx::query_as(
        "SELECT COUNT(*), SUM(revenue)::text FROM ad_interactions WHERE user_id = $1 AND source = 'callback'",
    )
    .bind(u)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((views, revenue.as_str()), (5, "0.0625"), "the replay recorded nothing; revenue is exact");
    let report = rewards::report(&pool, chrono::Utc::now() - chrono::Duration::hours(1)).await.unwrap();
    let line = report.iter().find(|l| l.persona == "trivia-host").expect("a line for the persona");
    assert_eq!((line.views, line.completions, line.earned_seconds), (5, 4, 120));
    assert_eq!(line.revenue, "0.0625");
    audit_passes(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn the_audit_flags_earned_time_spent_on_a_persona_that_is_not_ad_supported(pool: PgPool) {
    let u = user(&pool).await;
    rewards::confirm_view(&pool, &view(u, "view-1"), &policy(60, 600)).await.unwrap();
    let meter = Meter::start(pool.clone(), fast_config());
    let mut ad = open_spec(u, "1");
    ad.ad_supported = true;
    let s = meter.open(ad).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let row = s.close(EndReason::UserLeft).await.unwrap();
    meter.shutdown().await;
    audit_passes(&pool).await;
    // Someone marks the session as not ad-supported behind the meter's back.
    sqlx::query("UPDATE voice_sessions SET ad_supported = FALSE WHERE id = $1")
        .bind(row.id)
        .execute(&pool)
        .await
        .unwrap();
    let report = audit::audit(&pool).await.unwrap();
    let check = report.checks.iter().find(|c| c.name == "earned_only_ad_supported").unwrap();
    assert_eq!(check.violation_count, 1, "{report}");
    // And a second reward over the same earned card breaks one reward per view.
    sqlx::query(
        "INSERT INTO ad_interactions (user_id, ad_id, ad_type, view_duration, source, ad_view_id, rewarded_seconds, \
             reward_day, reward_cap_seconds, time_card_id) \
         SELECT user_id, ad_id, ad_type, 0, 'client', NULL, 60, reward_day, reward_cap_seconds, time_card_id \
         FROM ad_interactions WHERE user_id = $1",
    )
    .bind(u)
    .execute(&pool)
    .await
    .unwrap();
    let report = audit::audit(&pool).await.unwrap();
    let check = report.checks.iter().find(|c| c.name == "one_reward_per_ad_view").unwrap();
    assert!(check.violation_count >= 2, "{report}");
}

#[sqlx::test(migrations = "../migrations")]
async fn parallel_callbacks_of_one_user_never_earn_past_the_daily_cap(pool: PgPool) {
    let u = user(&pool).await;
    let p = policy(60, 120);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..6 {
        let (pool, p) = (pool.clone(), p.clone());
        set.spawn(async move { rewards::confirm_view(&pool, &view(u, &format!("par-{i}")), &p).await.unwrap() });
    }
    let mut rewarded = 0;
    while let Some(r) = set.join_next().await {
        if matches!(r.unwrap(), RewardOutcome::Rewarded { .. }) {
            rewarded += 1;
        }
    }
    assert_eq!(rewarded, 2, "120 s cap, 60 s a view");
    assert_eq!(metering::balance::balance(&pool, u).await.unwrap().funds.earned, Millis(120_000));
    audit_passes(&pool).await;
    // A reward written past the cap behind metering's back is caught.
    sqlx::query("UPDATE ad_interactions SET rewarded_seconds = 600 WHERE id = (SELECT id FROM ad_interactions WHERE user_id = $1 AND rewarded_seconds > 0 LIMIT 1)")
        .bind(u)
        .execute(&pool)
        .await
        .unwrap();
    let report = audit::audit(&pool).await.unwrap();
    let check = report.checks.iter().find(|c| c.name == "rewards_within_daily_cap").unwrap();
    assert_eq!(check.violation_count, 1, "{report}");
}
