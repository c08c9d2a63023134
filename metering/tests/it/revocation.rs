//! Cards whose payment comes back, against the real PostgreSQL and a running
//! meter: a refund or a lost dispute takes back only what is left (what was
//! spoken stays charged, and the books still balance); an open dispute
//! suspends a card, so a running session sees its balance drop; a won one
//! gives the card back.

use std::time::Duration;

use metering::cards::{self, Revocation};
use metering::meter::{Meter, MeterEvent};
use metering::records::CardStatus;
use metering::session::EndReason;
use metering::{audit, CardId, Millis};
use sqlx::PgPool;

use crate::common::*;

async fn audit_passes(pool: &PgPool) {
    let report = audit::audit(pool).await.unwrap();
    assert!(report.passed(), "{report}");
}

async fn revoked_ms(pool: &PgPool, card: CardId) -> Option<(i64, String)> {
    sqlx::query_as("SELECT revoked_ms, reason FROM card_revocations WHERE time_card_id = $1")
        .bind(card)
        .fetch_optional(pool)
        .await
        .unwrap()
}

async fn in_tx<T>(
    pool: &PgPool,
    f: impl for<'c> FnOnce(
        &'c mut sqlx::PgConnection,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = metering::Result<T>> + Send + 'c>>,
) -> T {
    let mut tx = pool.begin().await.unwrap();
    let out = f(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    out
}

#[sqlx::test(migrations = "../migrations")]
async fn a_refunded_partly_used_card_loses_only_its_unused_part_and_the_books_still_balance(pool: PgPool) {
    let u = user(&pool).await;
    let c = card(&pool, u, 1).await;
    let meter = Meter::start(pool.clone(), fast_config());
    let s = meter.open(open_spec(u, "10")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let row = s.close(EndReason::UserLeft).await.unwrap();
    let (charged, spent, _) = card_books(&pool, c.id).await;
    assert!(charged >= 10_000 && charged == spent, "charged {charged}, spent {spent}");

    let id = c.id;
    let r = in_tx(&pool, move |tx| Box::pin(cards::revoke_in(tx, id, Revocation::Refund))).await;
    assert_eq!((r.status, r.balance()), (CardStatus::Refunded, Millis::ZERO));
    assert_eq!(revoked_ms(&pool, c.id).await, Some((60_000 - charged, "refund".into())));
    // What was spoken stays charged to the session.
    let session_charged: i64 = sqlx::query_scalar("SELECT charged_ms FROM voice_sessions WHERE id = $1")
        .bind(row.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(session_charged, charged);
    // Again: nothing more is taken.
    let again = in_tx(&pool, move |tx| Box::pin(cards::revoke_in(tx, id, Revocation::Refund))).await;
    assert_eq!(again.status, CardStatus::Refunded);
    assert_eq!(revoked_ms(&pool, c.id).await, Some((60_000 - charged, "refund".into())));
    assert_eq!(metering::balance::balance(&pool, u).await.unwrap().spendable, Millis::ZERO);
    meter.shutdown().await;
    audit_passes(&pool).await;

    // The audit sees a revocation that does not match the card.
    sqlx::query("UPDATE card_revocations SET revoked_ms = revoked_ms - 1 WHERE time_card_id = $1")
        .bind(c.id)
        .execute(&pool)
        .await
        .unwrap();
    let report = audit::audit(&pool).await.unwrap();
    assert!(!report.passed(), "{report}");
    assert!(report.to_string().contains("FAIL ledger_matches_cards"), "{report}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_suspended_card_pays_nothing_a_running_session_sees_its_balance_drop_and_a_won_dispute_restores_it(
    pool: PgPool,
) {
    let u = user(&pool).await;
    let c = card(&pool, u, 10).await;
    let meter = Meter::start(pool.clone(), fast_config());
    let mut s = meter.open(open_spec(u, "1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(s.snapshot().spendable > Millis::ZERO);

    let id = c.id;
    let suspended = in_tx(&pool, move |tx| Box::pin(cards::suspend_in(tx, id))).await;
    assert!(suspended.suspended);
    assert_eq!(suspended.status, CardStatus::Active, "the seed's status is unchanged");
    wait_for(&mut s, &MeterEvent::Exhausted, Duration::from_secs(5)).await;
    assert_eq!(s.snapshot().spendable, Millis::ZERO);
    let (at_suspension, _, _) = card_books(&pool, c.id).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(card_books(&pool, c.id).await.0, at_suspension, "nothing charged after the suspension");
    s.close(EndReason::BalanceExhausted).await.unwrap();
    assert_eq!(metering::balance::balance(&pool, u).await.unwrap().spendable, Millis::ZERO);
    let refused = meter.open(open_spec(u, "1")).await.err();
    assert!(matches!(refused, Some(metering::Error::InsufficientBalance { .. })), "{refused:?}");
    audit_passes(&pool).await;

    // The dispute is won: the card pays again, its balance intact.
    let back = in_tx(&pool, move |tx| Box::pin(cards::reinstate_in(tx, id))).await;
    assert!(!back.suspended);
    let b = metering::balance::balance(&pool, u).await.unwrap();
    assert_eq!(b.spendable, Millis(600_000 - at_suspension));
    let s = meter.open(open_spec(u, "1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    s.close(EndReason::UserLeft).await.unwrap();
    assert!(card_books(&pool, c.id).await.0 > at_suspension, "charged again once reinstated");
    meter.shutdown().await;
    audit_passes(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_lost_dispute_revokes_what_is_left_of_a_suspended_card(pool: PgPool) {
    let u = user(&pool).await;
    let c = card(&pool, u, 10).await;
    let meter = Meter::start(pool.clone(), fast_config());
    let s = meter.open(open_spec(u, "1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    s.close(EndReason::UserLeft).await.unwrap();
    let (charged, _, _) = card_books(&pool, c.id).await;
    let id = c.id;
    in_tx(&pool, move |tx| Box::pin(cards::suspend_in(tx, id))).await;
    let lost = in_tx(&pool, move |tx| Box::pin(cards::revoke_in(tx, id, Revocation::DisputeLost))).await;
    assert_eq!((lost.status, lost.balance(), lost.suspended), (CardStatus::Refunded, Millis::ZERO, false));
    assert_eq!(revoked_ms(&pool, c.id).await, Some((600_000 - charged, "dispute_lost".into())));
    // A refunded card is not suspended again or reinstated into paying.
    let after = in_tx(&pool, move |tx| Box::pin(cards::suspend_in(tx, id))).await;
    assert!(!after.suspended);
    let after = in_tx(&pool, move |tx| Box::pin(cards::reinstate_in(tx, id))).await;
    assert_eq!((after.status, after.balance()), (CardStatus::Refunded, Millis::ZERO));
    meter.shutdown().await;
    audit_passes(&pool).await;
}
