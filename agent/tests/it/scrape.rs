//! A user talks for 20 s and leaves; the session ends `user_left` charged
//! exactly its seconds at the persona's multiplier; a real Prometheus
//! (Debian's package) scrapes the worker and reports the same billed
//! seconds as the database; `promtool check metrics` finds nothing to lint.
//! `/metrics` is behind a bearer token here (`http.metrics_token`), as a
//! worker reachable from the network must have it; Prometheus sends it.

use std::process::Stdio;
use std::time::Duration;

use crate::e2e::*;
use serde_json::Value;
use sqlx::PgPool;

const METRICS_TOKEN: &str = "prometheus-scrape-token";

/// `GET /metrics` with the token: (status code, body).
async fn metrics(port: u16, token: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: localhost\r\n{auth}\r\n").as_bytes()).await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[sqlx::test(migrations = "../migrations")]
async fn prometheus_scrapes_the_billed_seconds_the_database_holds(pool: PgPool) {
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    let agent_name = format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    let env = [("MINDBOT_WORKER_USER_GRACE_SECONDS", "1"), ("MINDBOT_HTTP_METRICS_TOKEN", METRICS_TOKEN)];
    let (_w, port) = worker(&pool, &agent_name, &env).await;
    assert_eq!(metrics(port, None).await.0, 401, "/metrics without its token");

    // Story Weaver costs 0.75: 750 ms of card per second of talk.
    let (_, room, token) = funded_call(&pool, "scrape", &agent_name, "story-weaver").await;
    let out = python("participant.py", &["--token", &token, "--publish-tone", "440", "--stay", "20"])
        .stdout(Stdio::piped())
        .output()
        .await
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["joined"], true, "{report}");

    // The session ends user_left once the grace passes.
    let mut row: Option<(String, i32, i64)> = None;
    for _ in 0..50 {
        row = sqlx::query_as(
            "SELECT end_reason, duration_seconds, charged_ms FROM voice_sessions WHERE room_name = $1 AND status <> 'active'",
        )
        .bind(&room)
        .fetch_optional(&pool)
        .await
        .unwrap();
        if row.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (reason, seconds, charged) = row.expect("the session ended");
    assert_eq!(reason, "user_left");
    assert!((18..=20).contains(&seconds), "about 20 s of talk: {seconds}");
    assert_eq!(charged, i64::from(seconds) * 750, "charged exactly its seconds x 0.75");

    // A real Prometheus scrapes the worker.
    let dir = std::env::temp_dir().join(format!("prom-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: mindbot\n    authorization:\n      credentials: {METRICS_TOKEN}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let prom_port = free_port();
    let _prom = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting prometheus (Debian package `prometheus`)");
    let query = "/api/v1/query?query=sum(mindbot_billed_seconds_total)";
    let mut scraped = None;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if tokio::net::TcpStream::connect(("127.0.0.1", prom_port)).await.is_err() {
            continue; // not listening yet
        }
        let (code, body) = get(prom_port, query).await;
        if code != 200 {
            continue;
        }
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if let Some(value) = v["data"]["result"][0]["value"][1].as_str() {
            scraped = value.parse::<f64>().ok();
            break;
        }
    }
    let db: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(duration_seconds), 0)::int8 FROM voice_sessions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(scraped, Some(db as f64), "Prometheus and the database disagree on billed seconds");

    // The exposition itself lints clean.
    let (code, text) = metrics(port, Some(METRICS_TOKEN)).await;
    assert_eq!(code, 200);
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let lint = promtool.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&lint.stdout), String::from_utf8_lossy(&lint.stderr));
    assert!(lint.status.success() && said.trim().is_empty(), "promtool: {said}\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
