//! The worker supervisor in-process (`mindbot_agent::supervisor::run`), not
//! as a process: against the real PostgreSQL and LiveKit server it
//! registers and says so on `/readyz`; told to shut down through its future
//! while a request is in flight, it stops accepting, answers that request,
//! and returns; a drain request with nothing running makes it return; two
//! supervisors in one process each show only their own sessions on
//! `/metrics`. (The signals themselves are tested on the real binary, in
//! `lifecycle` and `session`.)

use std::time::Duration;

use crate::e2e::*;
use mindbot_agent::config::Config;
use mindbot_agent::telemetry::Metrics;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `/readyz` once it says ready (the server binds before it registers with
/// LiveKit, and answers 503 until then): (status code, body).
async fn ready(port: u16) -> (u16, String) {
    loop {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            let (code, body) = get(port, "/readyz").await;
            if code != 503 {
                return (code, body);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads from `s` until `text` has arrived; returns all that was read.
async fn read_until(s: &mut TcpStream, text: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains(text) {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection closed before {text:?}: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

/// A worker's settings for the test's database, under a unique agent name,
/// with the API on and the operator HTTP on a free port (returned).
fn config(pool: &PgPool) -> (Config, u16) {
    let agent_name = format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    let api = [
        ("MINDBOT_HTTP_WEB_ROOT", ""),
        ("MINDBOT_API_ENABLED", "true"),
        ("MINDBOT_API_JWT_KEY", "a-test-key-of-at-least-thirty-two-bytes"),
        ("MINDBOT_API_JWT_ISSUER", "test"),
        ("MINDBOT_API_JWT_AUDIENCE", "mindbot"),
    ];
    worker_config(pool, &agent_name, &api)
}

/// A recorder of its own (these tests read no metric).
fn metrics() -> Metrics {
    Metrics::scoped().unwrap().0
}

#[sqlx::test(migrations = "../migrations")]
async fn the_supervisor_registers_and_on_shutdown_answers_the_request_in_flight_then_returns(pool: PgPool) {
    ensure("scripts/livekit-server.sh", Some("start"));
    let (config, port) = config(&pool);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let supervisor = tokio::spawn(async move {
        mindbot_agent::supervisor::run(&config, metrics(), shutdown, futures_util::stream::pending()).await
    });

    // Registered with LiveKit, as the operator's readiness probe sees it.
    let (code, body) = tokio::time::timeout(Duration::from_secs(60), ready(port)).await.expect("the worker gets ready");
    assert_eq!((code, body.as_str()), (200, "database ok\nlivekit registered\n"));

    // A request in flight: its header is in and the handler is reading its
    // body (the server asked for it with 100 Continue) when shutdown comes.
    let body = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "POST /v1/webhooks/stripe HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Stripe-Signature: t=1,v1=00\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    read_until(&mut s, "HTTP/1.1 100 Continue\r\n\r\n").await;
    stop.send(()).unwrap();

    // The server stops accepting new clients, but the supervisor does not
    // return while the request is open.
    let refused = async {
        while TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), refused).await.expect("the server stops accepting");
    assert!(!supervisor.is_finished(), "the supervisor returned with a request in flight");

    // The rest of the body: the request is answered (a bad signature), then the supervisor returns.
    s.write_all(body).await.unwrap();
    let answer = read_until(&mut s, "}").await;
    let json = answer.lines().last().unwrap();
    assert!(answer.contains("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
    assert!(json.contains(r#""error":"bad_signature""#), "{answer}");
    let returned = tokio::time::timeout(Duration::from_secs(30), supervisor).await.expect("the supervisor returns");
    returned.unwrap().expect("the supervisor stops cleanly");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_drain_request_with_no_session_running_makes_the_registered_supervisor_return(pool: PgPool) {
    ensure("scripts/livekit-server.sh", Some("start"));
    let agent_name = format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    // Registered: its /readyz said so.
    let (worker, _port) = worker(&pool, &agent_name, &[]).await;
    worker.drain();
    let returned = tokio::time::timeout(Duration::from_secs(30), worker.returned()).await;
    returned.expect("the supervisor returns").expect("the supervisor stops cleanly");
}

#[sqlx::test(migrations = "../migrations")]
async fn two_supervisors_in_one_process_each_show_only_their_own_sessions_on_metrics(pool: PgPool) {
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    let name = || format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    let (busy_name, idle_name) = (name(), name());
    let (_busy, busy_port) = worker(&pool, &busy_name, &[("MINDBOT_WORKER_USER_GRACE_SECONDS", "1")]).await;
    let (_idle, idle_port) = worker(&pool, &idle_name, &[]).await;

    let (_, _room, token) = funded_call(&pool, "separate", &busy_name, "professor-ada").await;
    let report = visit(&token, &["--stay", "3", "--expect-data", "mindbot.session"]).await;
    assert!(messages(&report, "mindbot.session").iter().any(|m| m["type"] == "started"), "{report}");
    let ended = "mindbot_sessions_ended_total{persona=\"professor-ada\",reason=\"user_left\"}";
    let mut busy = String::new();
    for _ in 0..100 {
        busy = get(busy_port, "/metrics").await.1;
        if sample(&busy, ended).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(sample(&busy, ended), Some(1.0), "{busy}");
    assert_eq!(sample(&busy, "mindbot_jobs_assigned_total"), Some(1.0), "{busy}");

    let idle = get(idle_port, "/metrics").await.1;
    assert_eq!(sample(&idle, "mindbot_jobs_assigned_total"), Some(0.0), "{idle}");
    assert!(!idle.contains("professor-ada"), "the idle worker shows no persona's series: {idle}");
}
