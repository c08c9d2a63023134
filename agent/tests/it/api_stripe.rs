//! Money paths of the Stripe webhook against the real binary and PostgreSQL,
//! events signed as Stripe signs them: a flood of signatures is refused at
//! once, a refund counts whichever arrives first, a payment that is not its
//! tier's price issues no card, and disputes suspend, reinstate or revoke.

use std::time::{Duration, Instant};

use crate::api_support::*;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

fn payment(id: &str, intent: &str, user: Uuid, amount: i64, currency: &str) -> Value {
    json!({"id": id, "object": "event", "type": "payment_intent.succeeded", "data": {"object": {
        "id": intent, "object": "payment_intent", "amount": amount, "amount_received": amount, "currency": currency,
        "metadata": {"user_id": user.to_string(), "tier_id": "pro"}}}})
}

fn refund(id: &str, intent: &str) -> Value {
    json!({"id": id, "object": "event", "type": "charge.refunded", "data": {"object": {
        "id": format!("ch_{intent}"), "object": "charge", "payment_intent": intent, "refunded": true,
        "amount_refunded": 4999}}})
}

fn dispute(id: &str, intent: &str, kind: &str, status: &str) -> Value {
    json!({"id": id, "object": "event", "type": format!("charge.dispute.{kind}"), "data": {"object": {
        "id": format!("dp_{intent}"), "object": "dispute", "charge": format!("ch_{intent}"),
        "payment_intent": intent, "amount": 4999, "status": status}}})
}

/// What a user and an operator see of one payment: its status, and its
/// card's status, balance and revoked time (if it has a card).
type Seen = (String, Option<(String, i64, Option<i64>)>);

async fn seen(pool: &PgPool, intent: &str) -> Seen {
    let (status, card): (String, Option<Uuid>) =
        sqlx::query_as("SELECT status, time_card_id FROM payment_history WHERE stripe_payment_intent_id = $1")
            .bind(intent)
            .fetch_one(pool)
            .await
            .unwrap();
    let cards: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM time_cards WHERE stripe_payment_intent_id = $1")
        .bind(intent)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(cards, i64::from(card.is_some()), "{intent}: cards beside the payment's own");
    let Some(card) = card else { return (status, None) };
    let row: (String, i64, Option<i64>) = sqlx::query_as(
        "SELECT CASE WHEN suspended_at IS NULL THEN status ELSE 'suspended' END, \
                remaining_minutes::int8 * 60000 + remaining_sub_ms, \
                (SELECT revoked_ms FROM card_revocations WHERE time_card_id = c.id) \
         FROM time_cards c WHERE id = $1",
    )
    .bind(card)
    .fetch_one(pool)
    .await
    .unwrap();
    (status, Some(row))
}

async fn balance_ms(api: &ApiServer, user: Uuid) -> i64 {
    api.get("/v1/me/balance", Some(&token(user))).await.json()["balance_ms"].as_i64().unwrap()
}

async fn audit_passes(pool: &PgPool) {
    let report = metering::audit::audit(pool).await.unwrap();
    assert!(report.passed(), "{report}");
}

const CARD_MS: i64 = 615 * 60_000;

#[sqlx::test(migrations = "../migrations")]
async fn ten_thousand_v1_signatures_are_refused_with_400_in_under_50_ms(pool: PgPool) {
    let api = ApiServer::start(&pool, &[]).await;
    let u = user(&pool).await;
    // The largest body the test API takes, so that every HMAC over it costs.
    let mut event = payment("evt_flood", "pi_flood", u, 4999, "usd");
    event["padding"] = json!("x".repeat(3800));
    let body = event.to_string();
    let now = chrono::Utc::now().timestamp();
    let flood = format!("t={now},{}", format!("v1={},", "ab".repeat(16)).repeat(10_000));
    let headers = [("Content-Type", "application/json"), ("Stripe-Signature", flood.as_str())];
    // Once to warm the connection path, then timed.
    request(api.port, "POST", "/v1/webhooks/stripe", &headers, Some(body.as_bytes())).await.error(400, "bad_signature");
    let started = Instant::now();
    let reply = request(api.port, "POST", "/v1/webhooks/stripe", &headers, Some(body.as_bytes())).await;
    let took = started.elapsed();
    reply.error(400, "bad_signature");
    println!("10,000 v1 entries ({} bytes of header) refused in {took:?}", flood.len());
    assert!(took < Duration::from_millis(50), "took {took:?}");
    // The same body, signed once as Stripe signs it, is still accepted.
    tier(&pool, "pro", 10, 4999, true).await;
    let signed = stripe(&api, &event).await;
    assert_eq!(signed.status, 200, "{}", signed.body);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_refund_that_arrives_before_its_payment_leaves_the_same_state_as_one_after(pool: PgPool) {
    let api = ApiServer::start(&pool, &[]).await;
    tier(&pool, "pro", 10, 4999, true).await;
    let (first, second) = (user(&pool).await, user(&pool).await);

    // In order: the payment, then its refund.
    stripe(&api, &payment("evt_a1", "pi_a", first, 4999, "usd")).await;
    assert_eq!(balance_ms(&api, first).await, CARD_MS);
    let r = stripe(&api, &refund("evt_a2", "pi_a")).await;
    assert_eq!(r.json()["outcome"], "payment refunded; card refunded", "{}", r.body);

    // Out of order: the refund first is recorded, not lost...
    let early = stripe(&api, &refund("evt_b1", "pi_b")).await;
    assert_eq!(early.status, 200, "{}", early.body);
    assert_eq!(early.json()["outcome"], "recorded before its payment");
    // ...and the payment after it issues no card that can pay.
    let late = stripe(&api, &payment("evt_b2", "pi_b", second, 4999, "usd")).await.json();
    assert!(late["outcome"].as_str().unwrap().ends_with("payment refunded; card refunded"), "{late}");
    assert_eq!(balance_ms(&api, second).await, 0);

    let expected: Seen = ("refunded".into(), Some(("refunded".into(), 0, Some(CARD_MS))));
    assert_eq!(seen(&pool, "pi_a").await, expected);
    assert_eq!(seen(&pool, "pi_b").await, expected);
    // Replays of either change nothing.
    assert_eq!(stripe(&api, &payment("evt_b2b", "pi_b", second, 4999, "usd")).await.json()["outcome"], "duplicate");
    assert_eq!(seen(&pool, "pi_b").await, expected);
    audit_passes(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_payment_that_is_not_its_tiers_price_issues_no_card_and_is_recorded(pool: PgPool) {
    let api = ApiServer::start(&pool, &[]).await;
    tier(&pool, "pro", 10, 4999, true).await;
    let u = user(&pool).await;
    let cheap = stripe(&api, &payment("evt_c1", "pi_cheap", u, 100, "usd")).await;
    assert_eq!(cheap.status, 200, "Stripe must not retry it forever: {}", cheap.body);
    assert_eq!(cheap.json()["outcome"], "payment recorded; no card: paid 100 usd, tier pro costs 4999 usd");
    let foreign = stripe(&api, &payment("evt_c2", "pi_yen", u, 4999, "jpy")).await.json();
    assert_eq!(foreign["outcome"], "payment recorded; no card: paid 4999 jpy, tier pro costs 4999 usd");
    assert_eq!(seen(&pool, "pi_cheap").await, ("amount_mismatch".into(), None));
    assert_eq!(seen(&pool, "pi_yen").await, ("amount_mismatch".into(), None));
    assert_eq!(balance_ms(&api, u).await, 0);
    // The right price, in upper case as some clients write it, still pays.
    let paid = stripe(&api, &payment("evt_c3", "pi_right", u, 4999, "USD")).await.json();
    assert!(paid["outcome"].as_str().unwrap().starts_with("card_issued"), "{paid}");
    assert_eq!(balance_ms(&api, u).await, CARD_MS);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_dispute_suspends_the_card_a_won_one_restores_it_and_a_lost_one_revokes_what_is_left(pool: PgPool) {
    let api = ApiServer::start(&pool, &[]).await;
    tier(&pool, "pro", 10, 4999, true).await;
    let u = user(&pool).await;

    stripe(&api, &payment("evt_d1", "pi_won", u, 4999, "usd")).await;
    let opened = stripe(&api, &dispute("evt_d2", "pi_won", "created", "needs_response")).await.json();
    assert_eq!(opened["outcome"], "payment disputed; card suspended");
    assert_eq!(balance_ms(&api, u).await, 0, "a suspended card pays nothing");
    let card = &api.get("/v1/me/cards", Some(&token(u))).await.json()["cards"][0];
    assert_eq!((card["status"].as_str(), card["spendable"].as_bool()), (Some("active"), Some(false)), "{card}");
    let won = stripe(&api, &dispute("evt_d3", "pi_won", "closed", "won")).await.json();
    assert_eq!(won["outcome"], "payment succeeded; card active");
    assert_eq!(balance_ms(&api, u).await, CARD_MS);

    // Lost, after part of the card was spoken (a session charged 90 s).
    stripe(&api, &payment("evt_d4", "pi_lost", u, 4999, "usd")).await;
    let (lost_card,): (Uuid,) = sqlx::query_as("SELECT id FROM time_cards WHERE stripe_payment_intent_id = 'pi_lost'")
        .fetch_one(&pool)
        .await
        .unwrap();
    spend(&pool, u, lost_card, 90_000).await;
    stripe(&api, &dispute("evt_d5", "pi_lost", "created", "needs_response")).await;
    let lost = stripe(&api, &dispute("evt_d6", "pi_lost", "closed", "lost")).await.json();
    assert_eq!(lost["outcome"], "payment dispute_lost; card refunded");
    let revoked = CARD_MS - 90_000;
    assert_eq!(seen(&pool, "pi_lost").await, ("dispute_lost".into(), Some(("refunded".into(), 0, Some(revoked)))));
    assert_eq!(balance_ms(&api, u).await, CARD_MS, "only the won card pays");

    // A close delivered before its opening: the dispute stays closed.
    stripe(&api, &payment("evt_d7", "pi_late", u, 4999, "usd")).await;
    stripe(&api, &dispute("evt_d8", "pi_late", "closed", "won")).await;
    stripe(&api, &dispute("evt_d9", "pi_late", "created", "needs_response")).await;
    assert_eq!(seen(&pool, "pi_late").await, ("succeeded".into(), Some(("active".into(), CARD_MS, None))));
    assert_eq!(balance_ms(&api, u).await, 2 * CARD_MS);
    audit_passes(&pool).await;
}

/// A closed session of `user` that was charged `ms` from `card`, written as
/// the meter writes it (session, ledger and card together).
async fn spend(pool: &PgPool, user: Uuid, card: Uuid, ms: i64) {
    let session = closed_session(pool, user, "professor-ada", ms, ms).await;
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO card_charges (voice_session_id, time_card_id, charged_ms) VALUES ($1, $2, $3)")
        .bind(session)
        .bind(card)
        .bind(ms)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE time_cards SET remaining_minutes = (total_minutes::int8 * 60000 - $2) / 60000, \
             remaining_sub_ms = (total_minutes::int8 * 60000 - $2) % 60000 WHERE id = $1",
    )
    .bind(card)
    .bind(ms)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}
