//! Shared by the end-to-end tests: the worker (in this process, or as the
//! real `mindbot-agent run` binary for the tests about signals), the
//! project's Python end user, tokens that dispatch the agent, funded users,
//! and reading the worker's operator HTTP.

#![allow(dead_code)] // each test module uses a different part

use std::process::Stdio;
use std::time::Duration;

use mindbot_tests::db;
use serde_json::Value;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};

pub use mindbot_tests::{ensure, root, url_for};

use crate::in_process::{self, wait_ready, Mode, Service};
use mindbot_agent::config::Config;

/// The settings every test worker has: the test's database, the dev LiveKit
/// server, `agent_name`, the operator HTTP on `port`, voice off unless a test
/// turns it on (config.toml's default is on); then `extra_env`.
fn worker_env(pool: &PgPool, agent_name: &str, port: u16, extra_env: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("DATABASE_URL".to_string(), url_for(pool)),
        ("LIVEKIT_URL".to_string(), "ws://127.0.0.1:7880".to_string()),
        ("MINDBOT_LIVEKIT_AGENT_NAME".to_string(), agent_name.to_string()),
        ("MINDBOT_DATABASE_MIGRATE_ON_START".to_string(), "false".to_string()),
        ("MINDBOT_LOG_LEVEL".to_string(), "info".to_string()),
        ("MINDBOT_HTTP_ADDRESS".to_string(), format!("127.0.0.1:{port}")),
        ("MINDBOT_VOICE_ENABLED".to_string(), "false".to_string()),
    ];
    env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The settings of a test worker (`worker_env`) as the binary would read
/// them, with its operator HTTP on a free port (returned).
pub fn worker_config(pool: &PgPool, agent_name: &str, extra_env: &[(&str, &str)]) -> (Config, u16) {
    let port = free_port();
    let env = worker_env(pool, agent_name, port, extra_env);
    let pairs: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    (in_process::config(&pairs), port)
}

/// Starts the worker supervisor in this process (its own runtime, metrics
/// and log sink: `in_process`) under a unique agent name, with its operator
/// HTTP on a free port; returns once it is registered with LiveKit (its
/// `/readyz` says so), with that port. Dropping the service shuts it down.
pub async fn worker(pool: &PgPool, agent_name: &str, extra_env: &[(&str, &str)]) -> (Service, u16) {
    let (config, port) = worker_config(pool, agent_name, extra_env);
    let (service, failed) = Service::start(Mode::Worker, config, "worker");
    wait_ready("the worker", failed, Duration::from_secs(20), || in_process::answers(port, "/readyz", 200)).await;
    // The server files a new worker for dispatch just after answering its registration.
    tokio::time::sleep(Duration::from_millis(500)).await;
    (service, port)
}

/// The same worker as a real `mindbot-agent run` process, for the tests
/// about signals (SIGTERM drains, SIGKILL leaves orphans); returns once it
/// logged its registration.
pub async fn worker_process(
    pool: &PgPool,
    agent_name: &str,
    extra_env: &[(&str, &str)],
) -> (tokio::process::Child, u16) {
    let port = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mindbot-agent"))
        .arg("run")
        .envs(worker_env(pool, agent_name, port, extra_env))
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting mindbot-agent run");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[worker process] {line}");
            if line.contains("worker registered") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(20), rx).await.expect("worker registered in time").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    (child, port)
}

/// A plain HTTP GET on loopback: (status code, body).
pub async fn get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

/// The value of one sample line (`name{labels} value`) in Prometheus text.
pub fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(name_and_labels)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

pub fn python(script: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(root().join(".cache/venv/bin/python"));
    cmd.arg(root().join("tests/clients").join(script)).args(args).kill_on_drop(true);
    cmd
}

pub async fn dispatch_token(room: &str, user: &str, agent_name: &str, metadata: &Value) -> String {
    let out = python(
        "room_admin.py",
        &[
            "create-token",
            "--room",
            room,
            "--identity",
            user,
            "--agent-dispatch",
            agent_name,
            "--metadata",
            &metadata.to_string(),
        ],
    )
    .output()
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["token"].as_str().unwrap().to_string()
}

/// A new user with an active card of `minutes`.
pub async fn user_with_card(pool: &PgPool, minutes: i32) -> uuid::Uuid {
    let user = db::named_user(pool, "Test User").await;
    db::active_card(pool, user, minutes).await;
    user
}

/// The Python user joins with `token` (publishing a tone, so it is announced
/// at once) plus `args`, and this returns its report.
pub async fn visit(token: &str, args: &[&str]) -> Value {
    let out = python("participant.py", &[&["--token", token, "--publish-tone", "440"], args].concat())
        .stdout(Stdio::piped())
        .output()
        .await
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("python report: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The Python user who speaks and listens (`tests/clients/talker.py`)
/// joins with `token` plus `args`; its report.
pub async fn talk(token: &str, args: &[&str]) -> Value {
    let out = python("talker.py", &[&["--token", token], args].concat())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .await
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("talker report: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The JSON messages a report received on `topic`, in order.
pub fn messages(report: &Value, topic: &str) -> Vec<Value> {
    report["data"]
        .as_array()
        .map(|data| {
            data.iter()
                .filter(|d| d["topic"] == topic)
                .filter_map(|d| serde_json::from_str(d["text"].as_str()?).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A user with a 10-minute card and a token that dispatches `agent_name` as
/// `persona` to a new room `<prefix>-<uuid>`: (user, room, token).
pub async fn funded_call(pool: &PgPool, prefix: &str, agent_name: &str, persona: &str) -> (uuid::Uuid, String, String) {
    let user = user_with_card(pool, 10).await;
    let room = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
    let meta = serde_json::json!({"user_id": user.to_string(), "persona": persona});
    let token = dispatch_token(&room, &user.to_string(), agent_name, &meta).await;
    (user, room, token)
}

/// Writes a custom persona row around the API (as the app may): `config`
/// under `slug` (also its name) with `system_prompt`, owned by `owner`.
pub async fn insert_custom_persona(pool: &PgPool, owner: uuid::Uuid, slug: &str, config: Value, system_prompt: &str) {
    sqlx::query("INSERT INTO custom_personas (user_id, slug, name, config, system_prompt) VALUES ($1, $2, $2, $3, $4)")
        .bind(owner)
        .bind(slug)
        .bind(config)
        .bind(system_prompt)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("custom persona {slug}: {e}"));
}
