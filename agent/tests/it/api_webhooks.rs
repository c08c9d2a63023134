//! The API's webhooks and contract against real parts: Stripe events signed
//! as Stripe signs them (a payment and its replay give one card, a refund, a
//! subscription's life), a private LiveKit server sending its webhooks to the
//! API (a finished room and a departed user close the sessions a meter still
//! holds), and schemathesis over the OpenAPI document with a valid token.

use crate::worker_support;

use std::time::Duration;

use crate::api_support::*;
use crate::worker_support::PrivateServer;
use livekit_api::access_token::AccessToken;
use metering::meter::{Meter, MeterConfig, MeterEvent};
use metering::session::OpenSession;
use metering::{Rate, UserId};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

fn payment_event(id: &str, intent: &str, user: Uuid, tier: &str) -> Value {
    json!({"id": id, "object": "event", "type": "payment_intent.succeeded", "data": {"object": {
        "id": intent, "object": "payment_intent", "amount": 4999, "amount_received": 4999, "currency": "usd",
        "metadata": {"user_id": user.to_string(), "tier_id": tier}}}})
}

fn refund_event(id: &str, intent: &str) -> Value {
    json!({"id": id, "object": "event", "type": "charge.refunded", "data": {"object": {
        "id": format!("ch_{intent}"), "object": "charge", "payment_intent": intent, "refunded": true, "amount_refunded": 4999}}})
}

async fn count(pool: &PgPool, sql: &str, bind: &str) -> i64 {
    sqlx::query_scalar(sql).bind(bind).fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_stripe_payment_and_its_replays_give_one_card_and_a_refund_refunds_it(pool: PgPool) {
    let api = ApiServer::start(&pool, &[]).await;
    tier(&pool, "pro", 10, 4999, true).await;
    let u = user(&pool).await;

    let first = stripe(&api, &payment_event("evt_1", "pi_1", u, "pro")).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(first.json()["outcome"].as_str().unwrap().starts_with("card_issued"), "{}", first.body);
    assert_eq!(stripe(&api, &payment_event("evt_1", "pi_1", u, "pro")).await.json()["outcome"], "duplicate");
    // Stripe may deliver the same payment under another event id.
    assert_eq!(stripe(&api, &payment_event("evt_1b", "pi_1", u, "pro")).await.json()["outcome"], "duplicate");
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM time_cards WHERE stripe_payment_intent_id = $1", "pi_1").await, 1);
    let (card, status, owner, minutes): (Uuid, String, Uuid, i32) = sqlx::query_as(
        "SELECT id, status, user_id, total_minutes FROM time_cards WHERE stripe_payment_intent_id = 'pi_1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), owner, minutes), ("active", u, 615));
    let (paid_card, amount): (Option<Uuid>, i32) = sqlx::query_as(
        "SELECT time_card_id, amount_cents FROM payment_history WHERE stripe_payment_intent_id = 'pi_1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((paid_card, amount), (Some(card), 4999));
    assert_eq!(api.get("/v1/me/balance", Some(&token(u))).await.json()["balance_ms"], 615 * 60_000);

    // Signatures: wrong secret, stale, tampered body, absent.
    let body = payment_event("evt_2", "pi_2", u, "pro").to_string();
    let now = chrono::Utc::now().timestamp();
    let post = |sig: Option<String>, body: String| {
        let port = api.port;
        async move {
            let mut headers = vec![("Content-Type", "application/json".to_string())];
            headers.extend(sig.map(|s| ("Stripe-Signature", s)));
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            request(port, "POST", "/v1/webhooks/stripe", &headers, Some(body.as_bytes())).await
        }
    };
    post(Some(stripe_signature("whsec_other", now, &body)), body.clone()).await.error(400, "bad_signature");
    post(Some(stripe_signature(STRIPE_SECRET, now - 3600, &body)), body.clone()).await.error(400, "bad_signature");
    let tampered = body.replace("4999", "1");
    post(Some(stripe_signature(STRIPE_SECRET, now, &body)), tampered).await.error(400, "bad_signature");
    post(None, body.clone()).await.error(400, "bad_signature");
    post(Some("t=abc,v1=zz".into()), body.clone()).await.error(400, "bad_signature");
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM time_cards WHERE stripe_payment_intent_id = $1", "pi_2").await, 0);

    // A full refund of an unused card refunds the card; a replay changes nothing.
    let r = stripe(&api, &refund_event("evt_3", "pi_1")).await.json();
    assert_eq!(r["outcome"], "payment refunded; card refunded");
    let (status, minutes): (String, i32) =
        sqlx::query_as("SELECT status, remaining_minutes FROM time_cards WHERE id = $1")
            .bind(card)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), minutes), ("refunded", 0));
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM payment_history WHERE status = $1", "refunded").await, 1);
    assert_eq!(stripe(&api, &refund_event("evt_3", "pi_1")).await.json()["outcome"], "duplicate");

    // A card partly used loses what is left when its payment is refunded
    // (api_stripe.rs has the books of it).
    stripe(&api, &payment_event("evt_4", "pi_4", u, "pro")).await;
    sqlx::query("UPDATE time_cards SET remaining_minutes = 600 WHERE stripe_payment_intent_id = 'pi_4'")
        .execute(&pool)
        .await
        .unwrap();
    let r = stripe(&api, &refund_event("evt_5", "pi_4")).await.json();
    assert_eq!(r["outcome"], "payment refunded; card refunded", "{r}");
    let left: i32 =
        sqlx::query_scalar("SELECT remaining_minutes FROM time_cards WHERE stripe_payment_intent_id = 'pi_4'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(left, 0);

    // Events that cannot be acted on are accepted (Stripe would only retry) and change nothing.
    let stranger = stripe(&api, &payment_event("evt_6", "pi_6", Uuid::new_v4(), "pro")).await.json();
    assert!(stranger["outcome"].as_str().unwrap().starts_with("ignored"), "{stranger}");
    let unknown_tier = stripe(&api, &payment_event("evt_7", "pi_7", u, "no-such-tier")).await.json();
    assert_eq!(unknown_tier["outcome"], "payment recorded; no card: unknown tier");
    let other = stripe(&api, &json!({"id": "evt_8", "type": "invoice.paid", "data": {"object": {}}})).await.json();
    assert!(other["outcome"].as_str().unwrap().starts_with("ignored"));
    let cards = count(&pool, "SELECT COUNT(*) FROM time_cards WHERE user_id = $1::uuid", &u.to_string()).await;
    assert_eq!(cards, 2);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_paid_card_can_wait_pending_until_its_buyer_activates_the_code(pool: PgPool) {
    let api = ApiServer::start(&pool, &[("MINDBOT_API_STRIPE_ACTIVATE_CARDS", "false")]).await;
    tier(&pool, "pro", 10, 4999, true).await;
    let (buyer, other) = (user(&pool).await, user(&pool).await);
    assert_eq!(stripe(&api, &payment_event("evt_p", "pi_p", buyer, "pro")).await.status, 200);
    let (code, status): (String, String) =
        sqlx::query_as("SELECT activation_code, status FROM time_cards WHERE stripe_payment_intent_id = 'pi_p'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(status, "pending");
    assert_eq!(api.get("/v1/me/balance", Some(&token(buyer))).await.json()["balance_ms"], 0);
    // Only the buyer can activate a card bought for them.
    api.post("/v1/cards/activate", Some(&token(other)), &json!({"code": code})).await.error(422, "invalid_field");
    let r = api.post("/v1/cards/activate", Some(&token(buyer)), &json!({"code": code})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(api.get("/v1/me/balance", Some(&token(buyer))).await.json()["balance_ms"], 615 * 60_000);
}

#[sqlx::test(migrations = "../migrations")]
async fn stripe_subscription_events_keep_one_row_current_in_event_order_and_grant_the_level(pool: PgPool) {
    let api = ApiServer::start(&pool, &[]).await;
    let u = user(&pool).await;
    let now = chrono::Utc::now().timestamp();
    let sub = |id: &str, kind: &str, status: &str, created: i64| {
        json!({"id": id, "type": format!("customer.subscription.{kind}"), "created": created, "data": {"object": {
            "id": "sub_1", "object": "subscription", "status": status, "cancel_at_period_end": false,
            "metadata": {"user_id": u.to_string()},
            "items": {"data": [{"price": {"id": "premium_monthly"}, "current_period_start": now - 60, "current_period_end": now + 86_400}]}}}})
    };
    let personas = |api: &ApiServer| {
        let t = token(u);
        let port = api.port;
        async move {
            let r = request(port, "GET", "/v1/personas", &[("Authorization", &format!("Bearer {t}"))], None).await;
            r.json()["personas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["slug"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert!(!personas(&api).await.contains(&"executive-coach".to_string()));
    assert_eq!(
        stripe(&api, &sub("evt_s1", "created", "active", now - 30)).await.json()["outcome"],
        "subscription active"
    );
    assert!(personas(&api).await.contains(&"executive-coach".to_string()));
    assert_eq!(
        stripe(&api, &sub("evt_s2", "updated", "past_due", now - 20)).await.json()["outcome"],
        "subscription past_due"
    );
    assert_eq!(stripe(&api, &sub("evt_s3", "deleted", "active", now)).await.json()["outcome"], "subscription canceled");
    // An older event delivered late changes nothing.
    let late = stripe(&api, &sub("evt_s0", "updated", "active", now - 25)).await.json();
    assert_eq!(late["outcome"], "ignored: older than the subscription's last event");
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT plan_id, status FROM user_subscriptions WHERE user_id = $1")
            .bind(u)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows, vec![("premium_monthly".to_string(), "canceled".to_string())]);
    assert!(!personas(&api).await.contains(&"executive-coach".to_string()));
}

/// Waits until `session` is no longer active; its (status, end_reason).
async fn closed(pool: &PgPool, session: metering::SessionId) -> (String, String) {
    for _ in 0..150 {
        let row: (String, Option<String>) =
            sqlx::query_as("SELECT status, end_reason FROM voice_sessions WHERE id = $1")
                .bind(session)
                .fetch_one(pool)
                .await
                .unwrap();
        if row.0 != "active" {
            return (row.0, row.1.unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("session {session} still active after 15 s");
}

#[sqlx::test(migrations = "../migrations")]
async fn livekit_webhooks_close_the_sessions_a_meter_still_holds(pool: PgPool) {
    worker_support::logs();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server =
        PrivateServer::start_with_webhook(7994, 50600, &format!("http://127.0.0.1:{port}/v1/webhooks/livekit"));
    let api = ApiServer::start_on(&pool, port, &[("LIVEKIT_URL", &server.url())]).await;
    let u = user(&pool).await;
    card(&pool, u, 10).await;
    let meter = Meter::start(pool.clone(), MeterConfig { worker_id: "elsewhere".into(), ..MeterConfig::default() });
    let open = |room: &str| OpenSession {
        user: UserId(u),
        session_key: format!("job-{room}"),
        room: room.to_string(),
        persona_slug: "professor-ada".into(),
        rate: Rate::ONE,
        agent_type: "production".into(),
        worker_id: "elsewhere".into(),
        ad_supported: false,
    };

    // room_finished: the room is deleted while a meter charges a session in it.
    let rooms = worker_support::rooms(&server.http_url());
    let room = worker_support::unique("api-room");
    rooms.create_room(&room, Default::default()).await.expect("CreateRoom");
    let mut held = meter.open(open(&room)).await.unwrap();
    // Let the meter charge at least a second first.
    for _ in 0..100 {
        let charged: i64 = sqlx::query_scalar("SELECT charged_ms FROM voice_sessions WHERE id = $1")
            .bind(held.id())
            .fetch_one(&pool)
            .await
            .unwrap();
        if charged >= 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rooms.delete_room(&room).await.expect("DeleteRoom");
    assert_eq!(closed(&pool, held.id()).await, ("completed".into(), "room_closed".into()));
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match held.next_event().await {
                Some(MeterEvent::ClosedElsewhere) | None => return true,
                Some(_) => {}
            }
        }
    })
    .await;
    assert_eq!(event, Ok(true), "the meter saw the session closed elsewhere");
    let row = || async {
        let r: (i64, i64, bool) =
            sqlx::query_as("SELECT charged_ms, metered_ms, end_time = heartbeat_at FROM voice_sessions WHERE id = $1")
                .bind(held.id())
                .fetch_one(&pool)
                .await
                .unwrap();
        r
    };
    let (charged, metered, ends_at_heartbeat) = row().await;
    assert!(charged >= 1000, "charged {charged} ms before the room went");
    assert_eq!(charged, metered, "x1: charged what was metered");
    assert!(ends_at_heartbeat, "the session ends at its last heartbeat");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(row().await.0, charged, "nothing charged after the close");

    // participant_left: the user joins and leaves; their session in that room ends.
    let room2 = worker_support::unique("api-room2");
    let other = meter.open(open(&room2)).await.unwrap();
    let user_token = AccessToken::with_api_key(worker_support::API_KEY, worker_support::API_SECRET)
        .with_identity(&u.to_string())
        .with_grants(livekit_api::access_token::VideoGrants {
            room_join: true,
            room: room2.clone(),
            ..Default::default()
        })
        .to_jwt()
        .unwrap();
    let (participant, _events) = mindbot_transport::room::connect(&server.url(), &user_token, Default::default())
        .await
        .expect("joining as the user");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(closed_or_active(&pool, other.id()).await, "active", "joining closes nothing");
    participant.leave().await.unwrap();
    assert_eq!(closed(&pool, other.id()).await, ("completed".into(), "user_left".into()));

    // The ledger holds: every card's used time is what the sessions charged.
    let report = metering::audit::audit(&pool).await.unwrap();
    assert!(report.passed(), "{report}");

    // Unsigned or wrongly signed deliveries are refused.
    let body = json!({"event": "room_finished", "room": {"name": room2}}).to_string();
    let headers = [("Content-Type", "application/json"), ("Authorization", "not-a-token")];
    request(api.port, "POST", "/v1/webhooks/livekit", &headers, Some(body.as_bytes()))
        .await
        .error(400, "bad_signature");
    let forged = AccessToken::with_api_key(worker_support::API_KEY, "another-secret").to_jwt().unwrap();
    let headers = [("Content-Type", "application/json"), ("Authorization", forged.as_str())];
    request(api.port, "POST", "/v1/webhooks/livekit", &headers, Some(body.as_bytes()))
        .await
        .error(400, "bad_signature");
    drop((held, other));
    meter.shutdown().await;
}

async fn closed_or_active(pool: &PgPool, session: metering::SessionId) -> String {
    sqlx::query_scalar("SELECT status FROM voice_sessions WHERE id = $1").bind(session).fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn schemathesis_finds_no_server_error_and_no_schema_violation(pool: PgPool) {
    let status = std::process::Command::new("bash").arg(root().join("scripts/python-env.sh")).status().unwrap();
    assert!(status.success(), "scripts/python-env.sh failed");
    let api = ApiServer::start(&pool, &[]).await;
    let u = user(&pool).await;
    card(&pool, u, 30).await;
    // Schemathesis keeps a cache and its reports where it runs: not in the repository.
    let scratch = std::env::temp_dir().join(format!("schemathesis-{}-{}", std::process::id(), api.port));
    std::fs::create_dir_all(&scratch).unwrap();
    let started = std::time::Instant::now();
    let out = tokio::process::Command::new(root().join(".cache/venv/bin/schemathesis"))
        .current_dir(&scratch)
        .args(["run", &format!("http://127.0.0.1:{}/v1/openapi.json", api.port)])
        .args(["--header", &format!("Authorization: Bearer {}", token(u))])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", "25", "--seed", "6", "--workers", "1", "--no-color"])
        .args(["--generation-database", "none"])
        .env("SCHEMATHESIS_HOOKS", "")
        .kill_on_drop(true)
        .output()
        .await
        .expect("running schemathesis");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    println!("schemathesis took {:.1} s", started.elapsed().as_secs_f64());
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    let _ = std::fs::remove_dir_all(&scratch);
}
