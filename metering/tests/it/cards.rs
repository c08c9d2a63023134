//! Card lifecycle against the real PostgreSQL: issue, activate, rate limit,
//! expire, refund.

use chrono::{DateTime, Duration, Utc};
use metering::cards::{self, ActivationPolicy};
use metering::records::CardStatus;
use metering::{Error, Millis};
use sqlx::PgPool;

use crate::common;

#[sqlx::test(migrations = "../migrations")]
async fn issues_pending_cards_from_a_tier_with_hours_and_bonus(pool: PgPool) {
    sqlx::query(
        "INSERT INTO pricing_tiers (id, name, hours, price_cents, bonus_minutes) VALUES ('t2', 'Two', 2, 1500, 15)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let issued = cards::issue(&pool, "t2", 3, None, None).await.unwrap();
    assert_eq!(issued.len(), 3);
    for c in &issued {
        assert_eq!((c.total_minutes, c.remaining_minutes, c.status), (135, 135, CardStatus::Pending));
        assert_eq!(c.user_id, metering::ids::UNCLAIMED_CARDS_OWNER);
        assert!(cards::normalize_code(&c.activation_code).is_some());
    }
    let codes: std::collections::HashSet<_> = issued.iter().map(|c| &c.activation_code).collect();
    assert_eq!(codes.len(), 3);
}

#[sqlx::test(migrations = "../migrations")]
async fn one_card_per_payment_intent(pool: PgPool) {
    let t = common::tier(&pool, 10).await;
    cards::issue(&pool, &t, 1, None, Some("pi_once")).await.unwrap();
    let again = cards::issue(&pool, &t, 1, None, Some("pi_once")).await;
    assert!(matches!(again, Err(Error::Database(_))), "{again:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn unknown_or_inactive_tier_is_refused(pool: PgPool) {
    let e = cards::issue(&pool, "nope", 1, None, None).await.unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
}

#[sqlx::test(migrations = "../migrations")]
async fn activation_moves_pending_to_active_for_the_user(pool: PgPool) {
    let u = common::user(&pool).await;
    let t = common::tier(&pool, 30).await;
    let c = &cards::issue(&pool, &t, 1, None, None).await.unwrap()[0];
    let typed = c.activation_code.to_lowercase().replace('-', " ");
    let a = cards::activate(&pool, &typed, u, &ActivationPolicy::default()).await.unwrap();
    assert_eq!((a.status, a.user_id), (CardStatus::Active, u));
    // Activated now by the database's clock, valid for the policy's year.
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT NOW()").fetch_one(&pool).await.unwrap();
    let activated = a.activated_at.unwrap();
    assert!(activated <= now && now - activated < Duration::seconds(10), "{activated} vs {now}");
    assert_eq!(a.expires_at.unwrap(), activated + Duration::days(365));

    // Again by the same user: already active. By another: used. Nothing changes.
    let again = cards::activate(&pool, &c.activation_code, u, &ActivationPolicy::default()).await;
    assert!(matches!(again, Err(Error::CardAlreadyActive { .. })), "{again:?}");
    let other = common::user(&pool).await;
    let stolen = cards::activate(&pool, &c.activation_code, other, &ActivationPolicy::default()).await;
    assert!(matches!(stolen, Err(Error::BadActivationCode { .. })), "{stolen:?}");
    let b = metering::balance::balance(&pool, u).await.unwrap();
    assert_eq!(b.spendable, Millis::from_minutes(30));
}

#[sqlx::test(migrations = "../migrations")]
async fn wrong_codes_are_rate_limited_per_user(pool: PgPool) {
    let u = common::user(&pool).await;
    let t = common::tier(&pool, 5).await;
    let good = cards::issue(&pool, &t, 1, None, None).await.unwrap().remove(0);
    let policy = ActivationPolicy { max_failures: 3, ..ActivationPolicy::default() };
    for _ in 0..3 {
        let e = cards::activate(&pool, "AAAA-BBBB-CCCC-DDDD-EEEE", u, &policy).await.unwrap_err();
        assert!(matches!(e, Error::BadActivationCode { .. }), "{e}");
    }
    let e = cards::activate(&pool, &good.activation_code, u, &policy).await.unwrap_err();
    assert!(matches!(e, Error::ActivationRateLimited { .. }), "{e}");
    // Another user is not limited, and the window passes.
    let v = common::user(&pool).await;
    assert!(cards::activate(&pool, "garbage", v, &policy).await.is_err());
    // The window passes (by the database's clock: the failures are older).
    sqlx::query(
        "UPDATE card_activation_failures SET attempted_at = attempted_at - INTERVAL '16 minutes' WHERE user_id = $1",
    )
    .bind(u)
    .execute(&pool)
    .await
    .unwrap();
    cards::activate(&pool, &good.activation_code, u, &policy).await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn expired_cards_are_marked_and_not_spendable(pool: PgPool) {
    let u = common::user(&pool).await;
    let t = common::tier(&pool, 5).await;
    let c = cards::issue(&pool, &t, 1, None, None).await.unwrap().remove(0);
    let policy = ActivationPolicy { validity: Some(Duration::hours(1)), ..ActivationPolicy::default() };
    cards::activate(&pool, &c.activation_code, u, &policy).await.unwrap();
    assert_eq!(metering::balance::balance(&pool, u).await.unwrap().spendable, Millis::from_minutes(5));
    assert_eq!(cards::expire_due(&pool).await.unwrap(), 0, "an hour of validity left");
    // Two hours on, by the database's clock.
    sqlx::query(
        "UPDATE time_cards SET activated_at = activated_at - INTERVAL '2 hours', \
                 expires_at = expires_at - INTERVAL '2 hours' WHERE id = $1",
    )
    .bind(c.id)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(metering::balance::balance(&pool, u).await.unwrap().spendable, Millis::ZERO);
    assert_eq!(cards::expire_due(&pool).await.unwrap(), 1);
    let status: String =
        sqlx::query_scalar("SELECT status FROM time_cards WHERE id = $1").bind(c.id).fetch_one(&pool).await.unwrap();
    assert_eq!(status, "expired");
}

#[sqlx::test(migrations = "../migrations")]
async fn refund_only_unused_cards(pool: PgPool) {
    let u = common::user(&pool).await;
    let t = common::tier(&pool, 5).await;
    let pending = cards::issue(&pool, &t, 1, None, None).await.unwrap().remove(0);
    let r = cards::refund(&pool, pending.id).await.unwrap();
    assert_eq!((r.status, r.remaining_minutes, r.total_minutes), (CardStatus::Refunded, 0, 5));
    // Twice: refused.
    assert!(matches!(cards::refund(&pool, pending.id).await, Err(Error::RefundNotAllowed { .. })));
    // A partly used card is refused and unchanged.
    let used = common::card(&pool, u, 5).await;
    sqlx::query("UPDATE time_cards SET remaining_minutes = 4, remaining_sub_ms = 59000 WHERE id = $1")
        .bind(used.id)
        .execute(&pool)
        .await
        .unwrap();
    let e = cards::refund(&pool, used.id).await.unwrap_err();
    assert!(matches!(e, Error::RefundPartlyUsed { .. }), "{e}");
    let status: String =
        sqlx::query_scalar("SELECT status FROM time_cards WHERE id = $1").bind(used.id).fetch_one(&pool).await.unwrap();
    assert_eq!(status, "active");
}

#[sqlx::test(migrations = "../migrations")]
async fn authorisation_refuses_less_than_one_second(pool: PgPool) {
    let u = common::user(&pool).await;
    let e = metering::balance::authorize(&pool, u, "1.0".parse().unwrap()).await.unwrap_err();
    assert!(matches!(e, Error::InsufficientBalance { .. }), "{e}");
    common::card(&pool, u, 1).await;
    let a = metering::balance::authorize(&pool, u, "2.5".parse().unwrap()).await.unwrap();
    assert_eq!(a.seconds, 24);
    let a = metering::balance::authorize(&pool, u, "0.5".parse().unwrap()).await.unwrap();
    assert_eq!(a.seconds, 120);
}

#[sqlx::test(migrations = "../migrations")]
async fn twenty_parallel_wrong_codes_record_exactly_the_limit_and_the_rest_are_refused(pool: PgPool) {
    let u = common::user(&pool).await;
    let policy = ActivationPolicy { max_failures: 5, ..ActivationPolicy::default() };
    let attempts = (0..20).map(|i| {
        let (pool, policy) = (pool.clone(), policy.clone());
        tokio::spawn(async move {
            let code = format!("AAAA-BBBB-CCCC-DDDD-{:04}", i);
            cards::activate(&pool, &code, u, &policy).await.unwrap_err()
        })
    });
    let errors: Vec<Error> = futures_join(attempts).await;
    let wrong = errors.iter().filter(|e| matches!(e, Error::BadActivationCode { .. })).count();
    let limited = errors.iter().filter(|e| matches!(e, Error::ActivationRateLimited { .. })).count();
    assert_eq!((wrong, limited), (5, 15), "{errors:?}");
    let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM card_activation_failures WHERE user_id = $1")
        .bind(u)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(recorded, 5);
}

async fn futures_join<T: Send + 'static>(tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks.collect::<Vec<_>>() {
        out.push(t.await.unwrap());
    }
    out
}

#[sqlx::test(migrations = "../migrations")]
async fn a_granted_card_is_active_at_once_for_its_whole_time_and_the_books_balance(pool: PgPool) {
    let user = common::user(&pool).await;
    let card = cards::grant(&pool, user, 5).await.unwrap();
    assert_eq!(
        (card.user_id, card.status, card.total_minutes, card.remaining_minutes),
        (user, CardStatus::Active, 5, 5)
    );
    assert!(card.activated_at.is_some() && card.expires_at.is_none());
    assert_eq!(metering::balance::balance(&pool, user).await.unwrap().spendable, Millis(300_000));
    let report = metering::audit::audit(&pool).await.unwrap();
    assert!(report.passed(), "{report}");
}

#[sqlx::test(migrations = "../migrations")]
async fn granting_each_user_a_card_funds_them_all_at_once_and_whole_minutes_keep_the_books(pool: PgPool) {
    let users = [common::user(&pool).await, common::user(&pool).await, common::user(&pool).await];
    let ids = cards::grant_each(&pool, &users, Millis::from_minutes(600)).await.unwrap();
    assert_eq!(ids.len(), 3);
    for (user, id) in users.iter().zip(&ids) {
        let b = metering::balance::balance(&pool, *user).await.unwrap();
        assert_eq!(b.spendable, Millis(36_000_000));
        let (status, owner, total, code): (String, metering::UserId, i32, String) =
            sqlx::query_as("SELECT status, user_id, total_minutes, activation_code FROM time_cards WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!((status.as_str(), owner, total), ("active", *user, 600));
        assert_eq!(cards::normalize_code(&code).as_deref(), Some(code.as_str()));
    }
    let report = metering::audit::audit(&pool).await.unwrap();
    assert!(report.passed(), "{report}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_granted_part_minute_balance_is_a_whole_minute_card_with_that_much_left(pool: PgPool) {
    let user = common::user(&pool).await;
    let ids = cards::grant_each(&pool, &[user], Millis(5_000)).await.unwrap();
    let (total, minutes, sub_ms): (i32, i32, i32) =
        sqlx::query_as("SELECT total_minutes, remaining_minutes, remaining_sub_ms FROM time_cards WHERE id = $1")
            .bind(ids[0])
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((total, minutes, sub_ms), (1, 0, 5_000));
    assert_eq!(metering::balance::balance(&pool, user).await.unwrap().spendable, Millis(5_000));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_negative_grant_is_refused_naming_the_balance_and_writes_no_card(pool: PgPool) {
    let user = common::user(&pool).await;
    let err = cards::grant_each(&pool, &[user], Millis(-1)).await.unwrap_err();
    assert!(matches!(err, Error::InvalidGrant { balance_ms: -1 }), "{err:?}");
    assert!(err.to_string().contains("not -1 ms"), "{err}");
    let cards: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM time_cards WHERE user_id = $1")
        .bind(user)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(cards, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn cards_and_tiers_read_by_metering_equal_the_rows_read_through_the_public_select_lists(pool: PgPool) {
    use metering::records::{PricingTier, TimeCard, CARD_COLUMNS, TIER_COLUMNS};
    let tier = common::tier(&pool, 90).await;
    let user = common::user(&pool).await;
    let issued = cards::issue(&pool, &tier, 1, Some(user), Some("pi_lists")).await.unwrap().remove(0);
    let active = cards::activate(&pool, &issued.activation_code, user, &ActivationPolicy::default()).await.unwrap();
    let read: TimeCard = sqlx::query_as(&format!("SELECT {CARD_COLUMNS} FROM time_cards WHERE id = $1"))
        .bind(active.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(read, active);
    let balance = metering::balance::balance(&pool, user).await.unwrap();
    assert_eq!(balance.cards, vec![read]);
    let tiers: Vec<PricingTier> = sqlx::query_as(&format!(
        "SELECT {TIER_COLUMNS} FROM pricing_tiers WHERE COALESCE(active, TRUE) ORDER BY price_cents, id"
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(cards::tiers(&pool).await.unwrap(), tiers);
}
