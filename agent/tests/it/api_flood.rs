//! A flood of cheap requests must not cost the sessions anything: the real
//! worker (`mindbot-agent run` serving `/v1`) meters live sessions of the
//! Python end user on the real LiveKit and PostgreSQL while this test floods
//! `GET /v1/tiers` from loopback over many connections for a bounded time and
//! count. The meter's tick writes stay fast (p99 under 1 s, from the worker's
//! own histogram), no session ends `db_unavailable`, and the flood is turned
//! away with 429/503 instead of queueing without bound.

use crate::api_support;
use crate::e2e;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const FLOODERS: usize = 64;
const FLOOD_FOR: Duration = Duration::from_secs(15);
const FLOOD_MAX_REQUESTS: usize = 200_000;

/// What the flood got: answers by status (0: no answer), and the slowest answer.
#[derive(Debug, Default)]
struct Flood {
    statuses: BTreeMap<u16, usize>,
    slowest: Duration,
}

/// Keep-alive `GET /v1/tiers` requests on one connection (reconnecting when
/// the server closes it) until the time runs out or all the flooders together
/// have issued `FLOOD_MAX_REQUESTS`.
async fn flooder(port: u16, until: Instant, issued: Arc<AtomicUsize>) -> Flood {
    let mut flood = Flood::default();
    'connections: while Instant::now() < until {
        let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            *flood.statuses.entry(0).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        while Instant::now() < until {
            if issued.fetch_add(1, Ordering::Relaxed) >= FLOOD_MAX_REQUESTS {
                return flood;
            }
            let sent = Instant::now();
            if write.write_all(b"GET /v1/tiers HTTP/1.1\r\nHost: localhost\r\n\r\n").await.is_err() {
                continue 'connections;
            }
            let Ok(Some(status)) = tokio::time::timeout(Duration::from_secs(30), read_response(&mut read)).await else {
                *flood.statuses.entry(0).or_default() += 1;
                continue 'connections;
            };
            flood.slowest = flood.slowest.max(sent.elapsed());
            *flood.statuses.entry(status).or_default() += 1;
        }
    }
    flood
}

/// One HTTP/1.1 response with a Content-Length body; its status, or `None` if the connection ended.
async fn read_response(read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Option<u16> {
    let mut line = String::new();
    read.read_line(&mut line).await.ok().filter(|n| *n > 0)?;
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut length = 0usize;
    loop {
        line.clear();
        read.read_line(&mut line).await.ok().filter(|n| *n > 0)?;
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0u8; length];
    read.read_exact(&mut body).await.ok()?;
    Some(status)
}

/// The tick histogram's cumulative buckets (upper bound, count) and its count.
fn tick_histogram(metrics: &str) -> (Vec<(f64, f64)>, f64) {
    let mut buckets = Vec::new();
    for line in metrics.lines().filter(|l| l.starts_with("mindbot_meter_tick_duration_seconds_bucket{")) {
        let le = line.split("le=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() };
        buckets.push((le, line.rsplit(' ').next().unwrap().parse().unwrap()));
    }
    let count = e2e::sample(metrics, "mindbot_meter_tick_duration_seconds_count").unwrap_or(0.0);
    (buckets, count)
}

async fn room_rows(pool: &PgPool, rooms: &[String]) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as(
        "SELECT room_name, status, end_reason FROM voice_sessions WHERE room_name = ANY($1) ORDER BY room_name",
    )
    .bind(rooms)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_tiers_flood_from_loopback_neither_starves_the_meter_nor_queues_without_bound(pool: PgPool) {
    // Loads the machine for a while: not beside another such test (see the kit's lock).
    let _machine = mindbot_tests::lock::whole_machine().await;
    e2e::ensure("scripts/livekit-server.sh", Some("start"));
    e2e::ensure("scripts/python-env.sh", None);
    api_support::tier(&pool, "starter", 1, 999, true).await;
    let agent_name = format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    let mut env = api_support::api_env();
    env.extend([
        ("MINDBOT_WORKER_USER_GRACE_SECONDS", "2"),
        // Enough passes the per-client rate that the handlers, the concurrency
        // limit and the API's pool are all under load, not only the limiter.
        ("MINDBOT_API_RATE_LIMIT_PER_SECOND", "300"),
        ("MINDBOT_API_RATE_LIMIT_BURST", "300"),
        ("MINDBOT_HTTP_REQUEST_TIMEOUT_MS", "3000"),
    ]);
    let (_worker, port) = e2e::worker(&pool, &agent_name, &env).await;

    // Three users talk through the whole flood and leave afterwards.
    let mut rooms = Vec::new();
    let mut users = Vec::new();
    for i in 0..3 {
        let user = e2e::user_with_card(&pool, 30).await;
        let room = format!("flood-{i}-{}", uuid::Uuid::new_v4().simple());
        let meta = json!({"user_id": user.to_string(), "persona": "professor-ada"});
        let token = e2e::dispatch_token(&room, &user.to_string(), &agent_name, &meta).await;
        users.push(tokio::spawn(async move { e2e::visit(&token, &["--stay", "40"]).await }));
        rooms.push(room);
    }
    let until = Instant::now() + Duration::from_secs(30);
    while room_rows(&pool, &rooms).await.len() < rooms.len() {
        assert!(Instant::now() < until, "three sessions did not open: {:?}", room_rows(&pool, &rooms).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, before) = e2e::get(port, "/metrics").await;
    let (buckets_before, count_before) = tick_histogram(&before);

    let issued = Arc::new(AtomicUsize::new(0));
    let flood_began = Instant::now();
    let until = flood_began + FLOOD_FOR;
    let flooders: Vec<_> = (0..FLOODERS).map(|_| tokio::spawn(flooder(port, until, issued.clone()))).collect();
    let mut flood = Flood::default();
    for f in flooders {
        let f = f.await.unwrap();
        for (status, n) in f.statuses {
            *flood.statuses.entry(status).or_default() += n;
        }
        flood.slowest = flood.slowest.max(f.slowest);
    }
    // The flood ends at FLOOD_FOR or at FLOOD_MAX_REQUESTS, sooner on a quiet machine.
    let flooded = flood_began.elapsed().as_secs_f64();
    let (_, after) = e2e::get(port, "/metrics").await;
    let (buckets_after, count_after) = tick_histogram(&after);
    let sessions_during = room_rows(&pool, &rooms).await;

    let answered: usize = flood.statuses.iter().filter(|(s, _)| **s != 0).map(|(_, n)| n).sum();
    let ticks = count_after - count_before;
    let within = |le: f64| {
        let at = |b: &[(f64, f64)]| b.iter().find(|(l, _)| *l == le).map_or(0.0, |(_, c)| *c);
        at(&buckets_after) - at(&buckets_before)
    };
    let p99_bound = buckets_after.iter().map(|(le, _)| *le).find(|le| within(*le) >= 0.99 * ticks);
    eprintln!(
        "flood: {answered} answers {:?}, slowest {:?}; ticks during it: {ticks}, p99 <= {p99_bound:?} s",
        flood.statuses, flood.slowest
    );

    for user in users {
        user.await.unwrap();
    }
    let until = Instant::now() + Duration::from_secs(20);
    let ended = loop {
        let rows = room_rows(&pool, &rooms).await;
        if rows.iter().all(|(_, status, _)| status != "active") {
            break rows;
        }
        assert!(Instant::now() < until, "sessions still open after their users left: {rows:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    assert!(sessions_during.iter().all(|(_, status, _)| status == "active"), "{sessions_during:?}");
    for (room, _, reason) in &ended {
        assert_eq!(reason.as_deref(), Some("user_left"), "session in {room} ended {reason:?}, not by its user");
    }
    // One batch a second: every whole second of the flood but the first and last has its tick.
    assert!(ticks >= (flooded - 2.0).floor().max(3.0), "the meter ticked through the {flooded:.1} s flood: {ticks}");
    assert!(
        within(1.0) >= 0.99 * ticks,
        "tick p99 over 1 s during the flood: {ticks} ticks, {} within 1 s",
        within(1.0)
    );
    assert_eq!(e2e::sample(&after, "mindbot_meter_write_failures_total").unwrap_or(0.0), 0.0);
    assert!(flood.statuses.keys().all(|s| [200, 429, 503].contains(s)), "{:?}", flood.statuses);
    assert!(flood.statuses.get(&200).is_some_and(|n| *n > 0), "{:?}", flood.statuses);
    let refused = flood.statuses.get(&429).unwrap_or(&0) + flood.statuses.get(&503).unwrap_or(&0);
    assert!(refused > 0, "the flood was never turned away: {:?}", flood.statuses);
    // Bounded queueing: no answer waited much past the request timeout (3 s).
    assert!(flood.slowest < Duration::from_secs(6), "a flood request waited {:?}", flood.slowest);
    let audit = metering::audit::audit(&pool).await.unwrap();
    assert!(audit.passed(), "{audit}");
}
