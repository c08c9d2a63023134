//! What an operator runs beside the worker, checked against the real worker:
//! every metric the Grafana dashboard (`deploy/grafana/`) and the Prometheus
//! rules (`deploy/prometheus/`) query is one the worker exports, in a scrape
//! taken after a refusal and a metered session with voice on; and the
//! worker's log carries no terminal colour codes when its stderr is a pipe.
//! (`scripts/check-deploy.sh` checks the same files with promtool, helm,
//! hadolint and systemd-analyze.)

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use crate::e2e::*;
use serde_json::Value;
use sqlx::PgPool;
use tokio::io::AsyncReadExt;

/// The `mindbot_*` metric names in a PromQL expression (recording-rule names,
/// `instance:mindbot_...:p99_5m`, are not metrics and are skipped).
fn metric_names(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut names = Vec::new();
    let mut i = 0;
    while let Some(at) = expr[i..].find("mindbot_").map(|p| p + i) {
        let end = at + expr[at..].bytes().take_while(|&b| word(b)).count();
        let token = &expr[at..end];
        if (at == 0 || !word(bytes[at - 1])) && !token.contains(':') {
            names.push(token.to_string());
        }
        i = end;
    }
    names
}

/// Every PromQL string in the dashboard: panel targets and template queries.
fn dashboard_queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_queries(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| dashboard_queries(i, out)),
        _ => {}
    }
}

/// The metric names of a Prometheus text exposition (samples, not comments).
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_string())
        .collect()
}

/// Whether `room` gets a session that is active (`active`) or no longer
/// active (`!active`) within `within`.
async fn session_in(pool: &PgPool, room: &str, active: bool, within: Duration) -> bool {
    let until = std::time::Instant::now() + within;
    loop {
        let found: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM voice_sessions WHERE room_name = $1 AND (status = 'active') = $2)",
        )
        .bind(room)
        .bind(active)
        .fetch_one(pool)
        .await
        .unwrap();
        if found || std::time::Instant::now() >= until {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn every_metric_the_dashboard_and_the_alerts_query_is_in_a_real_scrape(pool: PgPool) {
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    ensure("scripts/speech-services.sh", Some("start"));
    let agent_name = format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    // Voice on (the test speech services) and the API on (webhooks), as in
    // production; the voice families the dashboard reads are exported from
    // the start, the persona-labelled ones with the first session.
    let env = [
        ("MINDBOT_WORKER_USER_GRACE_SECONDS", "1"),
        ("MINDBOT_VOICE_ENABLED", "true"),
        ("MINDBOT_VOICE_STT_BASE_URL", "http://127.0.0.1:7890"),
        ("MINDBOT_VOICE_LLM_BASE_URL", "http://127.0.0.1:7890"),
        ("MINDBOT_VOICE_TTS_DEFAULT_BASE_URL", "http://127.0.0.1:7890"),
        ("MINDBOT_API_ENABLED", "true"),
        ("MINDBOT_API_JWT_KEY", "operations-test-key-of-at-least-32-bytes"),
        ("MINDBOT_API_JWT_ISSUER", "operations-test"),
        ("MINDBOT_API_JWT_AUDIENCE", "mindbot"),
    ];
    let (_w, port) = worker(&pool, &agent_name, &env).await;

    // A refusal, then a metered session of a few seconds that ends user_left.
    let user = user_with_card(&pool, 10).await;
    let refused = serde_json::json!({"user_id": user.to_string(), "persona": "no-such-persona"});
    let room = format!("ops-refused-{}", uuid::Uuid::new_v4().simple());
    let report = visit(&dispatch_token(&room, &user.to_string(), &agent_name, &refused).await, &["--stay", "3"]).await;
    assert!(messages(&report, "mindbot.session").iter().any(|m| m["type"] == "refused"), "{report}");
    let meta = serde_json::json!({"user_id": user.to_string(), "persona": "story-weaver"});
    let room = format!("ops-{}", uuid::Uuid::new_v4().simple());
    let report = visit(&dispatch_token(&room, &user.to_string(), &agent_name, &meta).await, &["--stay", "4"]).await;
    assert!(messages(&report, "mindbot.session").iter().any(|m| m["type"] == "started"), "{report}");
    assert!(session_in(&pool, &room, false, Duration::from_secs(60)).await, "the session ended");

    let (code, text) = get(port, "/metrics").await;
    assert_eq!(code, 200);
    let scraped = exported(&text);

    let dashboard_file = root().join("deploy/grafana/mindbot-agent.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&dashboard_file).unwrap()).unwrap();
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    let panels = dashboard["panels"].as_array().unwrap();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().map(Vec::len).unwrap_or(0);
        assert!(targets > 0, "panel {} has no query", p["title"]);
    }
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/mindbot-rules.yml")).unwrap();
    queries.extend(rules.lines().filter_map(|l| l.trim().strip_prefix("expr:")).map(str::to_string));

    let mut named = BTreeSet::new();
    let mut missing = Vec::new();
    for q in &queries {
        for name in metric_names(q) {
            if !scraped.contains(&name) {
                missing.push(format!("{name} (in `{q}`)"));
            }
            named.insert(name);
        }
    }
    assert!(missing.is_empty(), "queried but not exported by the worker:\n{}\n\nscrape:\n{text}", missing.join("\n"));
    // The check has teeth: the issue's panels and alerts are all there.
    for family in [
        "mindbot_sessions_active",
        "mindbot_billed_seconds_total",
        "mindbot_card_time_charged_seconds_total",
        "mindbot_meter_tick_duration_seconds_bucket",
        "mindbot_hangup_latency_seconds_bucket",
        "mindbot_sessions_refused_total",
        "mindbot_voice_response_seconds_bucket",
        "mindbot_voice_errors_total",
        "mindbot_meter_write_failures_total",
        "mindbot_sessions_ended_total",
        "mindbot_sessions_orphaned_total",
        "mindbot_livekit_connected",
        "mindbot_worker_load",
        "mindbot_webhook_signature_failures_total",
    ] {
        assert!(named.contains(family), "nothing queries {family}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn the_worker_log_has_no_colour_codes_when_stderr_is_a_pipe(pool: PgPool) {
    ensure("scripts/livekit-server.sh", Some("start"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mindbot-agent"))
        .arg("run")
        .env("DATABASE_URL", url_for(&pool))
        .env("LIVEKIT_URL", "ws://127.0.0.1:7880")
        .env("MINDBOT_LIVEKIT_AGENT_NAME", format!("mindbot-test-{}", uuid::Uuid::new_v4().simple()))
        .env("MINDBOT_HTTP_ADDRESS", format!("127.0.0.1:{port}"))
        .env("MINDBOT_LOG_FORMAT", "text")
        .env_remove("NO_COLOR")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting mindbot-agent run");
    let mut stderr = child.stderr.take().unwrap();
    let mut log = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&log).contains("worker registered") {
            let n = stderr.read(&mut buf).await.unwrap();
            assert!(n > 0, "the worker exited: {}", String::from_utf8_lossy(&log));
            log.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read).await.expect("the worker registered");
    let text = String::from_utf8_lossy(&log);
    assert!(!log.contains(&0x1b), "no ESC byte (ANSI colour) in a piped log: {text:?}");
    assert!(text.contains(" INFO "), "a text log line with its level: {text}");
    child.kill().await.unwrap();
}

/// A plain HTTP POST on loopback: (status code, body).
async fn post(port: u16, path: &str, header: &str, body: &str) -> (u16, String) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\n{header}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

#[sqlx::test(migrations = "../migrations")]
async fn a_worker_counts_the_orphans_it_closes_and_the_webhooks_it_refuses(pool: PgPool) {
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    let fast_reaping = [
        ("MINDBOT_METER_HEARTBEAT_TIMEOUT_SECONDS", "4"),
        ("MINDBOT_METER_DB_GRACE_SECONDS", "2"),
        ("MINDBOT_METER_REAP_INTERVAL_SECONDS", "1"),
    ];
    let api = [
        ("MINDBOT_API_ENABLED", "true"),
        ("MINDBOT_API_JWT_KEY", "operations-test-key-of-at-least-32-bytes"),
        ("MINDBOT_API_JWT_ISSUER", "operations-test"),
        ("MINDBOT_API_JWT_AUDIENCE", "mindbot"),
        ("MINDBOT_API_STRIPE_WEBHOOK_SECRET", "whsec_operations"),
    ];
    let doomed_name = format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    let (mut doomed, _) = worker_process(&pool, &doomed_name, &fast_reaping).await;
    let survivor_env: Vec<_> = fast_reaping.iter().chain(api.iter()).copied().collect();
    let (_survivor, port) =
        worker(&pool, &format!("mindbot-test-{}", uuid::Uuid::new_v4().simple()), &survivor_env).await;
    let (_, text) = get(port, "/metrics").await;
    assert_eq!(sample(&text, "mindbot_sessions_orphaned_total "), Some(0.0), "{text}");

    // A session on the doomed worker, which is then killed without a drain.
    let (_, room, token) = funded_call(&pool, "ops-orphan", &doomed_name, "story-weaver").await;
    let user = python(
        "participant.py",
        // Long enough to be told of the orphan on a loaded machine (a late
        // dispatch, the heartbeat timeout, the reap): the survivor does not
        // remove the user, so they stay it out.
        &["--token", &token, "--publish-tone", "440", "--stay", "40", "--expect-data", "mindbot.session"],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    assert!(session_in(&pool, &room, true, Duration::from_secs(60)).await, "the session started on the doomed worker");
    doomed.start_kill().unwrap(); // SIGKILL
    doomed.wait().await.unwrap();

    // The survivor closes it from its heartbeat and counts it.
    let mut orphaned = None;
    for _ in 0..300 {
        let (_, text) = get(port, "/metrics").await;
        orphaned = sample(&text, "mindbot_sessions_orphaned_total ");
        if orphaned == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(orphaned, Some(1.0), "the survivor counted the orphan it closed");
    let reason: String = sqlx::query_scalar("SELECT end_reason FROM voice_sessions WHERE room_name = $1")
        .bind(&room)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(reason, "orphaned");
    // The user hears of it from the survivor, as the dead worker would have said it.
    let out = tokio::time::timeout(Duration::from_secs(90), user.wait_with_output()).await.unwrap().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let told = messages(&report, "mindbot.session");
    assert!(told.iter().any(|m| m["type"] == "ended" && m["reason"] == "orphaned"), "{report}");

    // Webhooks with a wrong signature are refused and counted by source.
    let event = r#"{"id":"evt_forged","type":"payment_intent.succeeded","data":{"object":{}}}"#;
    let (code, body) = post(port, "/v1/webhooks/stripe", "Stripe-Signature: t=1,v1=00", event).await;
    assert_eq!(code, 400, "{body}");
    let (code, body) =
        post(port, "/v1/webhooks/livekit", "Authorization: Bearer forged", r#"{"event":"room_finished"}"#).await;
    assert_eq!(code, 400, "{body}");
    let (_, text) = get(port, "/metrics").await;
    for source in ["stripe", "livekit"] {
        let line = format!("mindbot_webhook_signature_failures_total{{source=\"{source}\"}}");
        assert_eq!(sample(&text, &line), Some(1.0), "{source}: {text}");
    }
}
