//! What one client may cost the server, against the real binary
//! (`mindbot-agent api`) and the real PostgreSQL: a stalled header is cut
//! off, a burst from one address is answered 429 with Retry-After, requests
//! beyond the concurrency limit are shed with 503 while a stalled body times
//! out, a full API pool answers 503 at once while the worker's pool serves
//! readiness, and `/metrics` is reachable only with its token or on its own
//! address.

use std::time::{Duration, Instant};

use crate::api_support::*;
use serde_json::json;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Reads until the server closes the connection (or `within` passes): what it sent, and whether it closed.
async fn read_until_closed(s: &mut tokio::net::TcpStream, within: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let closed = tokio::time::timeout(within, async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&got).to_string(), closed)
}

#[sqlx::test(migrations = "../migrations")]
async fn a_client_that_stalls_half_way_through_its_header_is_disconnected(pool: PgPool) {
    let api = ApiServer::start(&pool, &[("MINDBOT_HTTP_HEADER_READ_TIMEOUT_MS", "1000")]).await;
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", api.port)).await.unwrap();
    stalled.write_all(b"GET /v1/tiers HTTP/1.1\r\nHost: loc").await.unwrap();
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", api.port)).await.unwrap();
    let started = Instant::now();
    // The bound is the configured header timeout; a few seconds of slack for a loaded machine.
    let (sent, closed) = read_until_closed(&mut stalled, Duration::from_secs(6)).await;
    assert!(closed, "the half-sent header still holds its connection after 6 s (header timeout 1 s)");
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before the timeout: {:?}", started.elapsed());
    assert!(!sent.contains("200 OK"), "a half header got an answer: {sent}");
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(6)).await;
    assert!(closed, "a connection that never sends a byte is closed too");
    // Everyone else is served as before.
    assert_eq!(api.get("/v1/tiers", None).await.status, 200);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_burst_from_one_client_gets_429_with_retry_after_and_other_clients_do_not(pool: PgPool) {
    tier(&pool, "starter", 1, 999, true).await;
    let limits = [("MINDBOT_API_RATE_LIMIT_PER_SECOND", "1"), ("MINDBOT_API_RATE_LIMIT_BURST", "5")];
    let api = ApiServer::start(&pool, &limits).await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let r = api.get("/v1/tiers", None).await;
        if r.status == 429 {
            r.error(429, "rate_limited");
            let retry: u64 = r.header("retry-after").expect("Retry-After on a 429").parse().unwrap();
            assert!(retry >= 1, "Retry-After {retry}");
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses[..5], [200; 5], "the burst allowance is served: {statuses:?}");
    assert!(statuses.iter().filter(|s| **s == 429).count() >= 3, "the rest of the burst is refused: {statuses:?}");
    assert!(statuses.iter().all(|s| [200, 429].contains(s)), "{statuses:?}");
    // Operator endpoints are not the API's: health stays answerable.
    assert_eq!(request(api.port, "GET", "/healthz", &[], None).await.status, 200);
    // X-Forwarded-For is not trusted by default: another claimed client is the same peer.
    let claimed = [("X-Forwarded-For", "203.0.113.9")];
    assert_eq!(request(api.port, "GET", "/v1/tiers", &claimed, None).await.status, 429);

    // Behind a proxy that appends the client's address, clients are told apart by it.
    let mut trusted = limits.to_vec();
    trusted.push(("MINDBOT_API_TRUST_X_FORWARDED_FOR", "true"));
    let proxied = ApiServer::start(&pool, &trusted).await;
    let first = [("X-Forwarded-For", "198.51.100.1, 203.0.113.7")];
    let second = [("X-Forwarded-For", "198.51.100.1, 203.0.113.8")];
    let mut first_statuses = Vec::new();
    for _ in 0..8 {
        first_statuses.push(request(proxied.port, "GET", "/v1/tiers", &first, None).await.status);
    }
    assert!(first_statuses.contains(&429), "{first_statuses:?}");
    let r = request(proxied.port, "GET", "/v1/tiers", &second, None).await;
    assert_eq!(r.status, 200, "another client behind the same proxy is not limited: {}", r.body);
}

#[sqlx::test(migrations = "../migrations")]
async fn past_the_concurrency_limit_requests_are_shed_with_503_and_a_stalled_body_times_out(pool: PgPool) {
    let api = ApiServer::start(
        &pool,
        &[("MINDBOT_API_MAX_CONCURRENT_REQUESTS", "1"), ("MINDBOT_HTTP_BODY_READ_TIMEOUT_MS", "2000")],
    )
    .await;
    let u = user(&pool).await;
    // A request that promises a body and sends half of it holds the one slot.
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", api.port)).await.unwrap();
    let head = format!(
        "POST /v1/cards/activate HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 40\r\n\r\n{{\"code\": ",
        token(u)
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shed = api.get("/v1/tiers", None).await;
    shed.error(503, "overloaded");
    assert_eq!(shed.header("retry-after"), Some("1"));
    // The stalled body is given up on after the body timeout, and the slot is free again.
    let (answer, _) = read_until_closed(&mut slow, Duration::from_secs(8)).await;
    let status = answer.split_whitespace().nth(1).unwrap_or("none");
    assert!(["400", "408", "503"].contains(&status), "the stalled body was answered {status:?}: {answer}");
    assert_eq!(api.get("/v1/tiers", None).await.status, 200);
    let body = json!({"code": "NOPE-NOPE"});
    assert_ne!(api.post("/v1/cards/activate", Some(&token(u)), &body).await.status, 503);
}

#[sqlx::test(migrations = "../migrations")]
async fn metrics_need_their_token_while_health_and_readiness_stay_open(pool: PgPool) {
    let api = ApiServer::start(&pool, &[("MINDBOT_HTTP_METRICS_TOKEN", "scrape-t0ken")]).await;
    assert_eq!(request(api.port, "GET", "/metrics", &[], None).await.status, 401);
    let wrong = [("Authorization", "Bearer scrape-t0keN")];
    assert_eq!(request(api.port, "GET", "/metrics", &wrong, None).await.status, 401);
    let right = [("Authorization", "Bearer scrape-t0ken")];
    let r = request(api.port, "GET", "/metrics", &right, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(request(api.port, "GET", "/healthz", &[], None).await.status, 200);
    assert_eq!(request(api.port, "GET", "/readyz", &[], None).await.status, 200);
}

#[sqlx::test(migrations = "../migrations")]
async fn metrics_on_their_own_address_are_not_served_on_the_public_one(pool: PgPool) {
    let metrics_port = free_port();
    let address = format!("127.0.0.1:{metrics_port}");
    let api = ApiServer::start(&pool, &[("MINDBOT_HTTP_METRICS_ADDRESS", &address)]).await;
    assert_eq!(request(api.port, "GET", "/metrics", &[], None).await.status, 404);
    assert_eq!(request(metrics_port, "GET", "/metrics", &[], None).await.status, 200);
    assert_eq!(request(api.port, "GET", "/readyz", &[], None).await.status, 200);
    assert_eq!(api.get("/v1/tiers", None).await.status, 200);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_full_api_pool_answers_503_busy_and_a_stuck_request_503_timeout_while_readiness_holds(pool: PgPool) {
    tier(&pool, "starter", 1, 999, true).await;
    let api = ApiServer::start(
        &pool,
        &[
            ("MINDBOT_API_DATABASE_MAX_CONNECTIONS", "1"),
            ("MINDBOT_API_DATABASE_ACQUIRE_TIMEOUT_MS", "200"),
            ("MINDBOT_HTTP_REQUEST_TIMEOUT_MS", "2000"),
        ],
    )
    .await;
    // A lock held elsewhere makes the tiers query wait: the API's one connection is stuck in it.
    let mut locker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE pricing_tiers IN ACCESS EXCLUSIVE MODE").execute(&mut *locker).await.unwrap();
    let port = api.port;
    let stuck = tokio::spawn(async move { request(port, "GET", "/v1/tiers", &[], None).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy = api.get("/v1/tiers", None).await;
    busy.error(503, "busy");
    assert_eq!(busy.header("retry-after"), Some("1"));
    // The worker's own pool (readiness) is not the API's.
    let ready = request(api.port, "GET", "/readyz", &[], None).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    stuck.await.unwrap().error(503, "timeout");
    locker.rollback().await.unwrap();
    let after = api.get("/v1/tiers", None).await;
    assert_eq!(after.status, 200, "{}", after.body);
}
