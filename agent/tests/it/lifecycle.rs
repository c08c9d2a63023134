//! How sessions end when something other than the user or the balance ends
//! them, with the real `mindbot-agent run`, the real LiveKit server, the real
//! PostgreSQL and the Python end user: cards rolling over and a card activated
//! mid-session; the room deleted and the agent removed; SIGTERM drains and a
//! second SIGTERM ends at once; two workers share twelve rooms and one is
//! killed; the LiveKit server restarts under a running worker. Every case
//! checks the books: the seconds metered, the card time charged, the audit.

use crate::worker_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::e2e::*;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::task::JoinHandle;

/// One session row, as the books hold it.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    status: String,
    end_reason: Option<String>,
    metered_ms: i64,
    charged_ms: i64,
    /// Seconds from the session's start to its end (or to now while open).
    lasted: f64,
}

async fn sessions_in(pool: &PgPool, room: &str) -> Vec<Row> {
    sqlx::query_as(
        "SELECT status, end_reason, metered_ms, charged_ms, \
         EXTRACT(EPOCH FROM COALESCE(end_time, NOW()) - start_time)::float8 AS lasted \
         FROM voice_sessions WHERE room_name = $1 ORDER BY start_time",
    )
    .bind(room)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Waits until `room` has a session that is no longer active.
async fn ended(pool: &PgPool, room: &str, within: Duration) -> Row {
    let until = Instant::now() + within;
    loop {
        let mut rows = sessions_in(pool, room).await;
        if let Some(i) = rows.iter().position(|r| r.status != "active") {
            return rows.swap_remove(i);
        }
        assert!(Instant::now() < until, "no ended session in {room} within {within:?}: {rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `room` has an open session; returns when it saw it.
async fn opened(pool: &PgPool, room: &str, within: Duration) -> Instant {
    let until = Instant::now() + within;
    loop {
        if !sessions_in(pool, room).await.is_empty() {
            return Instant::now();
        }
        assert!(Instant::now() < until, "no session opened in {room} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn room_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A funded user joins `room` (dispatching `agent_name` with `persona`) and
/// stays `stay` seconds unless hung up; the task yields the user's report.
async fn user_in_room(pool: &PgPool, agent_name: &str, room: &str, persona: &str, stay: u32) -> JoinHandle<Value> {
    let user = user_with_card(pool, 30).await;
    user_visit(user, agent_name, room, persona, stay, &[]).await
}

async fn user_visit(
    user: uuid::Uuid,
    agent_name: &str,
    room: &str,
    persona: &str,
    stay: u32,
    extra: &[&str],
) -> JoinHandle<Value> {
    let meta = json!({"user_id": user.to_string(), "persona": persona});
    let token = dispatch_token(room, &user.to_string(), agent_name, &meta).await;
    let mut args = vec!["--stay".to_string(), stay.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    tokio::spawn(async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        visit(&token, &args).await
    })
}

/// The messages the user got on `mindbot.session`, in order.
fn session_messages(report: &Value) -> Vec<Value> {
    report["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["topic"] == "mindbot.session")
        .filter_map(|d| serde_json::from_str::<Value>(d["text"].as_str()?).ok())
        .collect()
}

/// The types of those messages (`started`, `ended`...).
fn session_message_types(report: &Value) -> Vec<String> {
    session_messages(report).iter().filter_map(|m| m["type"].as_str().map(str::to_string)).collect()
}

/// The reasons of the `ended` messages the user got on `mindbot.session`.
fn ended_messages(report: &Value) -> Vec<String> {
    session_messages(report)
        .iter()
        .filter(|m| m["type"] == "ended")
        .map(|m| m["reason"].as_str().unwrap_or("").to_string())
        .collect()
}

fn signal(child: &tokio::process::Child, sig: &str) {
    let pid = child.id().expect("the worker is running").to_string();
    assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
}

async fn audit_passes(pool: &PgPool) {
    let audit = metering::audit::audit(pool).await.unwrap();
    assert!(audit.passed(), "{audit}");
}

/// Professor Ada costs 1.0: the card time charged is the metered time, and a
/// session that ended on the meter's clock is charged whole seconds.
fn charged_at_one(row: &Row) {
    assert_eq!(row.charged_ms, row.metered_ms, "{row:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn cards_roll_over_and_a_card_activated_mid_session_extends_it(pool: PgPool) {
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    let agent_name = format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    let env = [("MINDBOT_WORKER_USER_GRACE_SECONDS", "1"), ("MINDBOT_METER_WARNINGS_SECONDS", "[30]")];
    let (_w, port) = worker(&pool, &agent_name, &env).await;

    // Executive Coach costs 2.5 (premium): a one-minute card buys 24 s.
    // Two such cards, spent soonest expiry first.
    let user = user_with_card(&pool, 1).await;
    for sql in [
        "UPDATE time_cards SET expires_at = NOW() + INTERVAL '1 day' WHERE user_id = $1",
        "INSERT INTO time_cards (user_id, activation_code, total_minutes, remaining_minutes, status, activated_at, \
         expires_at) VALUES ($1, 'SECOND-' || $1::text, 1, 1, 'active', NOW(), NOW() + INTERVAL '2 days')",
        "INSERT INTO user_subscriptions (user_id, plan_id, status, current_period_start, current_period_end) \
         VALUES ($1, 'premium_monthly', 'active', NOW() - INTERVAL '1 day', NOW() + INTERVAL '29 days')",
    ] {
        sqlx::query(sql).bind(user).execute(&pool).await.unwrap();
    }
    // A one-minute card bought but not yet activated (issued cards belong to nobody until then).
    let code = metering::cards::generate_code();
    sqlx::query(
        "INSERT INTO time_cards (user_id, activation_code, total_minutes, remaining_minutes, status) \
         VALUES ($1, $2, 1, 1, 'pending')",
    )
    .bind(metering::ids::UNCLAIMED_CARDS_OWNER)
    .bind(&code)
    .execute(&pool)
    .await
    .unwrap();

    let room = room_name("rollover");
    let visit =
        user_visit(user, &agent_name, &room, "executive-coach", 55, &["--expect-data", "mindbot.balance"]).await;
    opened(&pool, &room, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    // 30 s in: the first card is spent, the second has 18 s left.
    let out = Command::new(env!("CARGO_BIN_EXE_mindbot-agent"))
        .args(["card", "activate", &code, "--user", &user.to_string()])
        .env("DATABASE_URL", url_for(&pool))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let report = visit.await.unwrap();
    eprintln!("user report: {report}");
    assert_eq!(report["ended"], "stay_elapsed", "not hung up at the first cards' 48 s: {report}");
    let balance = messages(&report, "mindbot.balance");
    let kinds: Vec<&str> = balance.iter().filter_map(|m| m["type"].as_str()).collect();
    assert!(kinds.contains(&"warning") && kinds.contains(&"extended"), "{balance:?}");
    let extended = balance.iter().find(|m| m["type"] == "extended").unwrap();
    assert!(extended["remaining_seconds"].as_i64().unwrap() > 30, "more than the second card held: {extended}");
    assert!(!messages(&report, "mindbot.session").iter().any(|m| m["type"] == "ended"), "{report}");

    let row = ended(&pool, &room, Duration::from_secs(20)).await;
    assert_eq!((row.status.as_str(), row.end_reason.as_deref()), ("completed", Some("user_left")), "{row:?}");
    assert_eq!(row.charged_ms, row.metered_ms / 1000 * 2500, "whole seconds at 2.5: {row:?}");
    assert!(row.metered_ms > 48_000, "talk went on past the first two cards: {row:?}");
    let cards: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT activation_code, status, remaining_minutes::int8 * 60000 + remaining_sub_ms FROM time_cards \
         WHERE user_id = $1 ORDER BY expires_at",
    )
    .bind(user)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(cards.len(), 3, "{cards:?}");
    assert_eq!((cards[0].1.as_str(), cards[0].2), ("used", 0), "{cards:?}");
    assert_eq!((cards[1].1.as_str(), cards[1].2), ("used", 0), "{cards:?}");
    assert_eq!((cards[2].0.as_str(), cards[2].1.as_str()), (code.as_str(), "active"), "{cards:?}");
    assert_eq!(cards[2].2, 60_000 - (row.charged_ms - 120_000), "the rest came off the new card: {cards:?}");
    let per_card: Vec<i64> = sqlx::query_scalar(
        "SELECT SUM(c.charged_ms)::int8 FROM card_charges c JOIN time_cards t ON t.id = c.time_card_id \
         WHERE t.user_id = $1 GROUP BY t.id ORDER BY t.expires_at",
    )
    .bind(user)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(per_card, vec![60_000, 60_000, row.charged_ms - 120_000], "the ledger, card by card");
    audit_passes(&pool).await;
    let (_, text) = get(port, "/metrics").await;
    assert_eq!(sample(&text, "mindbot_jobs_offered_total"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "mindbot_jobs_accepted_total"), Some(1.0), "{text}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_deleted_room_and_a_removed_agent_end_their_sessions_with_that_reason(pool: PgPool) {
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    let agent_name = format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    let (_w, port) = worker(&pool, &agent_name, &[]).await;
    let (deleted, removed) = (room_name("deleted"), room_name("removed"));
    let a = user_in_room(&pool, &agent_name, &deleted, "professor-ada", 40).await;
    let b = user_in_room(&pool, &agent_name, &removed, "professor-ada", 40).await;
    opened(&pool, &deleted, Duration::from_secs(20)).await;
    opened(&pool, &removed, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;

    let admin = |args: &[&str]| {
        let out = std::process::Command::new(root().join(".cache/venv/bin/python"))
            .arg(root().join("tests/clients/room_admin.py"))
            .args(args)
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        assert!(out.status.success(), "room_admin {args:?}: {}", String::from_utf8_lossy(&out.stdout));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    admin(&["delete-room", &deleted]);
    let listed = admin(&["list-participants", &removed]);
    let agent = listed["participants"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["kind"] == "AGENT"))
        .unwrap_or_else(|| panic!("an agent in {removed}: {listed}"))["identity"]
        .as_str()
        .unwrap()
        .to_string();
    admin(&["remove-participant", &removed, &agent]);

    let row = ended(&pool, &deleted, Duration::from_secs(30)).await;
    assert_eq!((row.status.as_str(), row.end_reason.as_deref()), ("completed", Some("room_closed")), "{row:?}");
    charged_at_one(&row);
    assert!(row.metered_ms >= 5_000 && row.metered_ms as f64 <= row.lasted * 1000.0 + 1.0, "{row:?}");
    let row = ended(&pool, &removed, Duration::from_secs(30)).await;
    assert_eq!((row.status.as_str(), row.end_reason.as_deref()), ("completed", Some("agent_removed")), "{row:?}");
    charged_at_one(&row);
    assert!(row.metered_ms >= 5_000 && row.metered_ms as f64 <= row.lasted * 1000.0 + 1.0, "{row:?}");

    let report = a.await.unwrap();
    assert_eq!(report["disconnect_reason"], "ROOM_DELETED", "{report}");
    b.abort();
    audit_passes(&pool).await;
    let (_, text) = get(port, "/metrics").await;
    for reason in ["room_closed", "agent_removed"] {
        let line = format!("mindbot_sessions_ended_total{{persona=\"professor-ada\",reason=\"{reason}\"}}");
        assert_eq!(sample(&text, &line), Some(1.0), "{text}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn sigterm_drains_running_sessions_then_ends_them_charged_to_the_second(pool: PgPool) {
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    let agent_name = format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    let (mut w, _) = worker_process(&pool, &agent_name, &[("MINDBOT_WORKER_DRAIN_TIMEOUT_SECONDS", "8")]).await;
    let talking = room_name("draining");
    let user = user_in_room(&pool, &agent_name, &talking, "professor-ada", 20).await;
    opened(&pool, &talking, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    signal(&w, "-TERM");
    let termed = Instant::now();
    // Draining: a job dispatched now is not taken, the running session goes on.
    let late = room_name("late");
    let late_user = user_in_room(&pool, &agent_name, &late, "professor-ada", 6).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(sessions_in(&pool, &late).await.is_empty(), "a draining worker took a new job");
    assert_eq!(sessions_in(&pool, &talking).await[0].status, "active", "the running session goes on");

    let row = ended(&pool, &talking, Duration::from_secs(30)).await;
    let drained = termed.elapsed();
    assert_eq!((row.status.as_str(), row.end_reason.as_deref()), ("completed", Some("shutdown")), "{row:?}");
    assert!(drained >= Duration::from_secs(8), "ended at the drain timeout, not before: {drained:?}");
    charged_at_one(&row);
    assert!(row.metered_ms >= 10_000 && row.metered_ms as f64 <= row.lasted * 1000.0 + 1.0, "{row:?}");
    let status = tokio::time::timeout(Duration::from_secs(15), w.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    let report = user.await.unwrap();
    assert_eq!(report["ended"], "stay_elapsed", "the user is left in the room, not removed: {report}");
    assert_eq!(ended_messages(&report), ["shutdown"], "the user is told why the agent goes: {report}");
    late_user.abort();

    // A second SIGTERM ends the sessions at once, charged just as exactly.
    let (mut w, _) = worker_process(&pool, &agent_name, &[("MINDBOT_WORKER_DRAIN_TIMEOUT_SECONDS", "300")]).await;
    let hurried = room_name("hurried");
    let user = user_in_room(&pool, &agent_name, &hurried, "professor-ada", 60).await;
    opened(&pool, &hurried, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    signal(&w, "-TERM");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sessions_in(&pool, &hurried).await[0].status, "active", "still draining");
    signal(&w, "-TERM");
    let row = ended(&pool, &hurried, Duration::from_secs(5)).await;
    assert_eq!((row.status.as_str(), row.end_reason.as_deref()), ("completed", Some("shutdown")), "{row:?}");
    charged_at_one(&row);
    assert!(row.metered_ms >= 6_000 && row.metered_ms as f64 <= row.lasted * 1000.0 + 1.0, "{row:?}");
    let status = tokio::time::timeout(Duration::from_secs(15), w.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    user.abort();
    audit_passes(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn two_workers_share_twelve_rooms_and_a_killed_one_is_closed_from_its_heartbeat(pool: PgPool) {
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    // Twelve Python users and a second worker process load the machine for
    // a minute: not beside the tests that measure real-time audio.
    let _machine = mindbot_tests::lock::whole_machine().await;
    let agent_name = format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    let env = [
        ("MINDBOT_METER_HEARTBEAT_TIMEOUT_SECONDS", "4"),
        ("MINDBOT_METER_DB_GRACE_SECONDS", "2"),
        ("MINDBOT_METER_REAP_INTERVAL_SECONDS", "1"),
        // Room for all twelve on either worker: the server may give the
        // survivor eight or more, and it must still take the job after the kill.
        ("MINDBOT_WORKER_MAX_JOBS", "16"),
        ("MINDBOT_WORKER_USER_GRACE_SECONDS", "2"),
    ];
    let (mut doomed, _) = worker_process(&pool, &agent_name, &env).await;
    let (_survivor, survivor_port) = worker(&pool, &agent_name, &env).await;

    let rooms: Vec<String> = (0..12).map(|_| room_name("pair")).collect();
    let mut users = Vec::new();
    for room in &rooms {
        // Long enough that the kill (every room open, then 5 s) comes
        // while the killed worker's sessions run, even on a slow machine.
        users.push(user_in_room(&pool, &agent_name, room, "professor-ada", 45).await);
    }
    for room in &rooms {
        opened(&pool, room, Duration::from_secs(40)).await;
    }
    let owners: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT worker_id FROM voice_sessions WHERE worker_id IS NOT NULL")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(owners.len(), 2, "jobs spread over both workers: {owners:?}");

    tokio::time::sleep(Duration::from_secs(5)).await;
    // Which worker is which: the survivor's sessions are the ones it reports.
    let killed_at = chrono::Utc::now();
    signal(&doomed, "-KILL");
    let _ = doomed.wait().await;

    // The killed worker's sessions are closed from their heartbeat by the survivor.
    let until = Instant::now() + Duration::from_secs(20);
    let orphans: Vec<(String, i64, i64, chrono::DateTime<chrono::Utc>)> = loop {
        let rows: Vec<(String, i64, i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
            "SELECT room_name, metered_ms, charged_ms, start_time FROM voice_sessions WHERE end_reason = 'orphaned'",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let alive: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM voice_sessions WHERE status = 'active' AND heartbeat_at < $1")
                .bind(killed_at)
                .fetch_one(&pool)
                .await
                .unwrap();
        if !rows.is_empty() && alive == 0 {
            break rows;
        }
        assert!(Instant::now() < until, "the killed worker's sessions were not reaped: {rows:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!orphans.is_empty() && orphans.len() < 12, "{orphans:?}");

    // The survivor keeps working: its sessions go on and a new job is served.
    let fresh = room_name("after-kill");
    let fresh_user = user_in_room(&pool, &agent_name, &fresh, "professor-ada", 5).await;
    // When each user's `started` was sent (the meter counts from then), and
    // when they left (wall clock, ms), read from their report: the time
    // `started` went out less when it arrived on the user's own clock
    // gives that clock's start, and the report's duration runs from there.
    let mut started_at = std::collections::HashMap::new();
    let mut left_at = std::collections::HashMap::new();
    for u in users {
        let report = u.await.unwrap();
        assert_eq!(report["joined"], true, "{report}");
        let started = report["data"].as_array().into_iter().flatten().find_map(|d| {
            let m: Value = serde_json::from_str(d["text"].as_str()?).ok()?;
            (d["topic"] == "mindbot.session" && m["type"] == "started").then(|| (m["at_ms"].as_i64(), d["at"].as_f64()))
        });
        let Some((Some(at_ms), Some(arrived_s))) = started else { panic!("no `started`: {report}") };
        let room = report["room"].as_str().unwrap().to_string();
        let clock_start_ms = at_ms - (arrived_s * 1000.0) as i64;
        left_at.insert(room.clone(), clock_start_ms + (report["duration"].as_f64().unwrap() * 1000.0) as i64);
        started_at.insert(room, at_ms);
    }
    // Charging is in arrears, whole seconds at each tick (one a second): an
    // orphan is charged the whole seconds lived by its last heartbeat, which
    // came less than a second before the kill. So it pays at most one second
    // less than a clean stop at the kill would have charged (that stop would
    // also forgive the unfinished second), and never anything after the kill.
    // A user who left before the kill (the last rooms opened late on a slow
    // machine, and the kill came in the first users' grace) was charged to
    // their leave: the same bound, at the leave.
    for (room, metered, charged, start) in &orphans {
        // The meter counts from `started` going out (`handshake`), after the row's start.
        let from_ms = started_at[room];
        assert!(from_ms >= start.timestamp_millis(), "{room}: `started` before the session's row");
        let until_kill = killed_at.timestamp_millis() - from_ms;
        let until_end = until_kill.min(left_at[room] - from_ms);
        let clean_stop = (until_end - 100) / 1000 * 1000;
        assert_eq!(metered, charged, "{room}");
        assert!(
            *metered <= until_kill && clean_stop - metered <= 1_000,
            "{room}: charged {metered} ms; the kill came {until_kill} ms after `started` went out, \
             the user left {} ms after it",
            left_at[room] - from_ms
        );
    }
    fresh_user.await.unwrap();
    let row = ended(&pool, &fresh, Duration::from_secs(20)).await;
    assert_eq!(row.end_reason.as_deref(), Some("user_left"), "{row:?}");
    // Every session is closed, each charged exactly its metered time.
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let open: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM voice_sessions WHERE status = 'active'")
            .fetch_one(&pool)
            .await
            .unwrap();
        if open == 0 {
            break;
        }
        assert!(Instant::now() < until, "{open} sessions still open");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for room in rooms.iter().chain([&fresh]) {
        for row in sessions_in(&pool, room).await {
            charged_at_one(&row);
        }
    }
    // The survivor's sessions (the fresh room's is one) all ended with their
    // users' leaving; the killed worker's, orphaned, or (on a slow machine,
    // where the last rooms opened late) with a user who left before the kill.
    let survivor: String = sqlx::query_scalar("SELECT worker_id FROM voice_sessions WHERE room_name = $1")
        .bind(&fresh)
        .fetch_one(&pool)
        .await
        .unwrap();
    type End = (String, String, Option<String>, Option<chrono::DateTime<chrono::Utc>>);
    let ends: Vec<End> = sqlx::query_as(
        "SELECT room_name, worker_id, end_reason, end_time FROM voice_sessions WHERE worker_id IS NOT NULL",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(ends.len(), 13, "{ends:?}");
    for (room, worker, reason, end) in &ends {
        let reason = reason.as_deref();
        if *worker == survivor {
            assert_eq!(reason, Some("user_left"), "{room} on the survivor");
        } else {
            let left_before = reason == Some("user_left") && end.is_some_and(|e| e < killed_at);
            assert!(reason == Some("orphaned") || left_before, "{room} on the killed worker: {reason:?} at {end:?}");
        }
    }
    audit_passes(&pool).await;
    let (_, text) = get(survivor_port, "/metrics").await;
    assert!(sample(&text, "mindbot_jobs_accepted_total").unwrap_or(0.0) >= 1.0, "{text}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_restarted_livekit_server_gets_the_worker_back_and_the_next_job_works(pool: PgPool) {
    ensure("scripts/python-env.sh", None);
    let mut server = worker_support::PrivateServer::start(7990, 50500);
    let agent_name = format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    let url = server.url();
    let (_w, port) = worker(&pool, &agent_name, &[("LIVEKIT_URL", url.as_str())]).await;
    assert_eq!(get(port, "/readyz").await.0, 200);

    server.stop();
    let until = Instant::now() + Duration::from_secs(15);
    while get(port, "/readyz").await.0 == 200 {
        assert!(Instant::now() < until, "/readyz still says ready with the server gone");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, text) = get(port, "/metrics").await;
    assert_eq!(sample(&text, "mindbot_livekit_connected"), Some(0.0), "{text}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.resume();
    let until = Instant::now() + Duration::from_secs(30);
    while get(port, "/readyz").await.0 != 200 {
        assert!(Instant::now() < until, "the worker did not register again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The server files the worker for dispatch just after registering it.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let user = user_with_card(&pool, 5).await;
    let room = room_name("restarted");
    let meta = json!({"user_id": user.to_string(), "persona": "professor-ada"});
    let token = dispatch_token(&room, &user.to_string(), &agent_name, &meta).await;
    let report = visit(&token, &["--url", &url, "--stay", "6", "--expect-data", "mindbot.session"]).await;
    assert!(messages(&report, "mindbot.session").iter().any(|m| m["type"] == "started"), "{report}");
    let row = ended(&pool, &room, Duration::from_secs(30)).await;
    assert_eq!(row.end_reason.as_deref(), Some("user_left"), "{row:?}");
    charged_at_one(&row);
    audit_passes(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_one_minute_session_limit_charges_exactly_sixty_seconds_when_the_hang_up_is_refused(pool: PgPool) {
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    let agent_name = format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    // The worker joins rooms at the LiveKit URL as always, but its server-API
    // calls (the hang-up) go to a loopback port where nothing listens.
    let refusing = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let refusing = format!("http://{refusing}");
    let (_w, _) = worker(&pool, &agent_name, &[("MINDBOT_LIVEKIT_SERVER_API_URL", &refusing)]).await;
    let user = user_with_card(&pool, 30).await;
    // Professor Ada (x1) with a one-minute session limit, as the user's custom persona.
    let mut config = serde_json::to_value(personas::Catalog::builtin().get("professor-ada").unwrap()).unwrap();
    config["session_time_limit"] = json!(1);
    sqlx::query("INSERT INTO custom_personas (user_id, slug, name, config, system_prompt) VALUES ($1, 'one-minute', 'One minute', $2, 'Be brief.')")
        .bind(user)
        .bind(config)
        .execute(&pool)
        .await
        .unwrap();
    let room = room_name("limit");
    let visit = user_visit(user, &agent_name, &room, "one-minute", 80, &["--expect-data", "mindbot.session"]).await;
    let row = ended(&pool, &room, Duration::from_secs(110)).await;
    assert_eq!((row.end_reason.as_deref(), row.metered_ms, row.charged_ms), (Some("time_limit"), 60_000, 60_000));
    let report = visit.await.unwrap();
    assert_ne!(report["disconnect_reason"], "PARTICIPANT_REMOVED", "the hang-up cannot have succeeded: {report}");
    let said = messages(&report, "mindbot.session");
    assert!(said.iter().any(|m| m["type"] == "ended" && m["reason"] == "time_limit"), "{report}");
    assert_eq!(sessions_in(&pool, &room).await[0].metered_ms, 60_000, "nothing charged after the end");
    audit_passes(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_user_who_floods_data_then_leaves_is_still_seen_leaving_and_charged_only_while_present(pool: PgPool) {
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    let agent_name = format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    let (_w, port) = worker(&pool, &agent_name, &[("MINDBOT_WORKER_USER_GRACE_SECONDS", "2")]).await;
    let room = room_name("flood");
    let user = user_with_card(&pool, 30).await;
    // Thousands of data packets nobody reads, then the user leaves at once.
    let visit = user_visit(
        user,
        &agent_name,
        &room,
        "professor-ada",
        4,
        &["--send-data", "flood:start", "--send-delay", "2", "--flood-data", "5000"],
    )
    .await;
    let report = visit.await.unwrap();
    assert!(report["flooded"].as_u64().unwrap() >= 1000, "{report}");
    let row = ended(&pool, &room, Duration::from_secs(30)).await;
    assert_eq!(row.end_reason.as_deref(), Some("user_left"), "{row:?}");
    let stayed = report["duration"].as_f64().unwrap();
    assert!(row.metered_ms as f64 <= stayed * 1000.0, "charged only while present ({stayed} s in the room): {row:?}");
    charged_at_one(&row);
    let (_, text) = get(port, "/metrics").await;
    eprintln!("data packets dropped: {:?}", sample(&text, "mindbot_room_data_dropped_total"));
    audit_passes(&pool).await;
}

/// The LiveKit server carrying the room dies mid-session (as a cluster node
/// may): the agent's connection breaks, and its resume attempts and media
/// timeout take seconds before the room counts as lost. The user hears no
/// agent from the break on, so charging stops there, not when the agent
/// gives up.
#[sqlx::test(migrations = "../migrations")]
async fn a_server_lost_mid_session_stops_the_charge_at_the_break(pool: PgPool) {
    ensure("scripts/python-env.sh", None);
    let mut server = worker_support::PrivateServer::start(7996, 50700);
    let agent_name = format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    let url = server.url();
    let (_w, port) = worker(&pool, &agent_name, &[("LIVEKIT_URL", url.as_str())]).await;
    assert_eq!(get(port, "/readyz").await.0, 200);
    let user = user_with_card(&pool, 5).await;
    let room = room_name("server-lost");
    let meta = json!({"user_id": user.to_string(), "persona": "professor-ada"});
    let token = dispatch_token(&room, &user.to_string(), &agent_name, &meta).await;
    let visit = {
        let (token, url) = (token.clone(), url.clone());
        tokio::spawn(async move { visit(&token, &["--url", &url, "--stay", "40"]).await })
    };
    let until = Instant::now() + Duration::from_secs(20);
    while sessions_in(&pool, &room).await.is_empty() {
        assert!(Instant::now() < until, "no session within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let killed_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&pool).await.unwrap();
    server.stop();
    let row = ended(&pool, &room, Duration::from_secs(40)).await;
    let report = visit.await.unwrap();
    // The meter counts from `started` going out (see `handshake`).
    let started = session_messages(&report).into_iter().find(|m| m["type"] == "started");
    let started_ms = started.and_then(|m| m["at_ms"].as_i64()).unwrap_or_else(|| panic!("no `started`: {report}"));
    let before_break = killed_at.timestamp_millis() - started_ms;
    eprintln!("{row:?}; {before_break} ms from `started` to the break; user: {report}");
    // Charged to the break (whole seconds), not the seconds the agent spent
    // resuming and waiting for its media before giving the room up.
    assert!(row.metered_ms <= before_break + 500, "{row:?}: charged past the break ({before_break} ms in)");
    assert!(row.metered_ms >= before_break - 2_000, "{row:?}: {before_break} ms in");
    charged_at_one(&row);
    audit_passes(&pool).await;
}

/// LiveKit dispatches the agent once, when the room is created, and not
/// again if no worker takes the job then (here: none is registered yet). A
/// worker's sweep dispatches such a room again, with the token's metadata,
/// and its user gets their agent; a room whose job a worker did take is
/// left alone.
#[sqlx::test(migrations = "../migrations")]
async fn a_room_whose_dispatch_no_worker_took_is_dispatched_again(pool: PgPool) {
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    let agent_name = format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    let lost = room_name("lost-dispatch");
    let user = user_in_room(&pool, &agent_name, &lost, "professor-ada", 18).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(sessions_in(&pool, &lost).await.is_empty(), "no worker yet, no session");

    let env = [("MINDBOT_WORKER_REDISPATCH_SECONDS", "2"), ("MINDBOT_WORKER_USER_GRACE_SECONDS", "1")];
    let (_w, port) = worker(&pool, &agent_name, &env).await;
    let came = Instant::now();
    opened(&pool, &lost, Duration::from_secs(20)).await;
    eprintln!("session opened {:?} after the worker registered", came.elapsed());
    // Two more sweeps: the room has its session, and no second dispatch.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rows = sessions_in(&pool, &lost).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].status, "active");
    let (_, metrics) = get(port, "/metrics").await;
    assert_eq!(sample(&metrics, "mindbot_redispatches_total"), Some(1.0), "{metrics}");
    let report = user.await.unwrap();
    let started = session_messages(&report).iter().any(|m| m["type"] == "started");
    assert!(started, "the user was told their session started: {report}");
    let row = ended(&pool, &lost, Duration::from_secs(30)).await;
    assert_eq!(row.end_reason.as_deref(), Some("user_left"), "{row:?}");
}

/// A job that comes while the worker cannot reach PostgreSQL waits for it
/// (up to `meter.db_grace_seconds`, as running sessions do) instead of
/// refusing the user: once the database answers, the session opens.
#[sqlx::test(migrations = "../migrations")]
async fn a_job_that_comes_while_the_database_is_cut_waits_for_it(pool: PgPool) {
    use mindbot_tests::proxy::{pg_addr, Proxy};
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    let proxy = Proxy::start(pg_addr()).await;
    let direct = url_for(&pool);
    let (head, rest) = direct.split_once('@').unwrap();
    let proxied = format!("{head}@{}/{}", proxy.addr, rest.split_once('/').unwrap().1);
    let agent_name = format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    let env = [("DATABASE_URL", proxied.as_str()), ("MINDBOT_WORKER_USER_GRACE_SECONDS", "1")];
    let (_w, port) = worker(&pool, &agent_name, &env).await;

    proxy.cut();
    let room = room_name("db-cut");
    let user = user_in_room(&pool, &agent_name, &room, "professor-ada", 14).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(sessions_in(&pool, &room).await.is_empty(), "no session while the database is cut");
    proxy.restore();
    let back = Instant::now();
    opened(&pool, &room, Duration::from_secs(30)).await;
    eprintln!("session opened {:?} after the database came back", back.elapsed());

    let report = user.await.unwrap();
    let told = session_message_types(&report);
    assert_eq!(told, ["started"], "started, and never refused: {report}");
    let row = ended(&pool, &room, Duration::from_secs(30)).await;
    assert_eq!(row.end_reason.as_deref(), Some("user_left"), "{row:?}");
    charged_at_one(&row);
    let (_, metrics) = get(port, "/metrics").await;
    let failed = sample(&metrics, "mindbot_database_errors_total{stage=\"admit\"}").unwrap_or(0.0);
    assert!(failed >= 1.0, "the failed attempts are counted: {metrics}");
}

/// LiveKit lists a job as taken whatever became of its join, so a join that
/// fails on the way to the server (a node going away, media that did not
/// come up in time) is the worker's to try again: here the first signaling
/// connection of the agent's join is closed as it comes.
#[sqlx::test(migrator = "metering::MIGRATOR")]
async fn a_join_that_fails_on_the_way_to_livekit_is_tried_again(pool: PgPool) {
    use mindbot_tests::proxy::Proxy;
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    // The test workers' LiveKit (`worker_env`).
    let hostport = "127.0.0.1:7880";
    let proxy = Proxy::start(hostport.parse().unwrap()).await;
    let through = format!("ws://{}", proxy.addr);
    let api = format!("http://{hostport}");
    let agent_name = format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    let env = [
        ("LIVEKIT_URL", through.as_str()),
        ("MINDBOT_LIVEKIT_SERVER_API_URL", api.as_str()),
        ("MINDBOT_WORKER_USER_GRACE_SECONDS", "1"),
    ];
    let (_w, port) = worker(&pool, &agent_name, &env).await;

    // The worker's own connection stays; its next one, the room join, is closed.
    proxy.refuse_next(1);
    let room = room_name("join-retry");
    let user = user_in_room(&pool, &agent_name, &room, "professor-ada", 8).await;
    opened(&pool, &room, Duration::from_secs(20)).await;
    assert_eq!(proxy.still_to_refuse(), 0, "the agent's first join went through the proxy and was closed");

    let report = user.await.unwrap();
    let told = session_message_types(&report);
    assert_eq!(told, ["started"], "the user got their agent: {report}");
    let row = ended(&pool, &room, Duration::from_secs(30)).await;
    assert_eq!(row.end_reason.as_deref(), Some("user_left"), "{row:?}");
    charged_at_one(&row);
    let (_, metrics) = get(port, "/metrics").await;
    let retried = sample(&metrics, "mindbot_room_join_retries_total").unwrap_or(0.0);
    assert!(retried >= 1.0, "the retried join is counted: {metrics}");
}
