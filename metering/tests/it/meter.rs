//! The meter against the real PostgreSQL: exact charges, roll-over, expiry,
//! exhaustion at the remainder, concurrency, replays, orphans and outages.
//! Sessions use large multipliers so that a one-minute card lasts seconds.

use std::time::Duration;

use chrono::Utc;
use metering::audit;
use metering::meter::{Meter, MeterEvent};
use metering::session::EndReason;
use metering::store::{TickEntry, TickResult};
use metering::Millis;
use sqlx::PgPool;

use crate::common::*;

async fn audit_passes(pool: &PgPool) {
    let report = audit::audit(pool).await.unwrap();
    assert!(report.passed(), "{report}");
}

#[sqlx::test(migrations = "../migrations")]
async fn charges_duration_times_multiplier_exactly(pool: PgPool) {
    let u = user(&pool).await;
    let c = card(&pool, u, 10).await;
    let meter = Meter::start(pool.clone(), fast_config());
    let s = meter.open(open_spec(u, "1.25")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3400)).await;
    let row = s.close(EndReason::UserLeft).await.unwrap();
    let secs = row.duration_seconds.unwrap() as i64;
    assert!(secs >= 3, "{row:?}");
    let (ledger, spent, status) = card_books(&pool, c.id).await;
    assert_eq!(ledger, secs * 1250, "each whole second costs 1.25 s, the unfinished one nothing");
    assert_eq!(spent, ledger);
    assert_eq!(status, "active");
    assert_eq!(row.cost_minutes, Some(1), "cost rounds up to whole minutes");
    assert_eq!(row.status, metering::records::SessionStatus::Completed);
    let (reason, slug_rows): (String, i64) = sqlx::query_as(
        "SELECT end_reason, (SELECT COUNT(*) FROM persona_sessions WHERE session_id = v.session_id) FROM voice_sessions v WHERE id = $1",
    )
    .bind(row.id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((reason.as_str(), slug_rows), ("user_left", 1));
    meter.shutdown().await;
    audit_passes(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn exhaustion_fires_when_the_remainder_runs_out_not_at_the_next_tick(pool: PgPool) {
    let u = user(&pool).await;
    let c = card(&pool, u, 1).await; // 60 s of card; at 12.5x that is 4.8 s
    let mut cfg = fast_config();
    cfg.warnings = vec![Duration::from_secs(3), Duration::from_secs(1)];
    let meter = Meter::start(pool.clone(), cfg);
    let mut s = meter.open(open_spec(u, "12.5")).await.unwrap();
    let seen = wait_for(&mut s, &MeterEvent::Exhausted, Duration::from_secs(10)).await;
    let warnings = seen.iter().filter(|e| matches!(e, MeterEvent::Warning { .. })).count();
    assert_eq!(warnings, 2, "{seen:?}");
    assert!(s.snapshot().exhausted);
    let row = s.close(EndReason::BalanceExhausted).await.unwrap();
    let (ledger, spent, status) = card_books(&pool, c.id).await;
    assert_eq!((ledger, spent, status.as_str()), (60_000, 60_000, "used"));
    let metered: i64 = sqlx::query_scalar("SELECT metered_ms FROM voice_sessions WHERE id = $1")
        .bind(row.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(metered, 4800, "the clock stops at the exact exhaustion instant");
    assert_eq!(row.duration_seconds, Some(4));
    meter.shutdown().await;
    audit_passes(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn charges_roll_over_cards_inside_one_second_soonest_expiry_first(pool: PgPool) {
    let u = user(&pool).await;
    let later = card(&pool, u, 1).await; // no expiry: pays last
    let sooner = card(&pool, u, 1).await;
    sqlx::query("UPDATE time_cards SET expires_at = NOW() + INTERVAL '1 day' WHERE id = $1")
        .bind(sooner.id)
        .execute(&pool)
        .await
        .unwrap();
    let meter = Meter::start(pool.clone(), fast_config());
    // 25x: the first card lasts 2.4 s, so second 3 is paid by both.
    let s = meter.open(open_spec(u, "25")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let row = s.close(EndReason::UserLeft).await.unwrap();
    let (l1, _, st1) = card_books(&pool, sooner.id).await;
    let (l2, _, st2) = card_books(&pool, later.id).await;
    assert_eq!((l1, st1.as_str()), (60_000, "used"));
    let secs = row.duration_seconds.unwrap() as i64;
    assert_eq!(l2, secs * 25_000 - 60_000);
    assert_eq!(st2, "active");
    meter.shutdown().await;
    audit_passes(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_card_expiring_mid_session_is_not_drawn_again(pool: PgPool) {
    let u = user(&pool).await;
    let expiring = card(&pool, u, 10).await;
    let other = card(&pool, u, 10).await;
    sqlx::query("UPDATE time_cards SET expires_at = NOW() + INTERVAL '1500 milliseconds' WHERE id = $1")
        .bind(expiring.id)
        .execute(&pool)
        .await
        .unwrap();
    let meter = Meter::start(pool.clone(), fast_config());
    let s = meter.open(open_spec(u, "1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3600)).await;
    let row = s.close(EndReason::UserLeft).await.unwrap();
    let (l1, s1, st1) = card_books(&pool, expiring.id).await;
    let (l2, _, _) = card_books(&pool, other.id).await;
    assert_eq!(st1, "expired");
    assert_eq!(l1, s1);
    assert!(l1 <= 2000, "at most the seconds before expiry: {l1}");
    assert_eq!(l1 + l2, row.duration_seconds.unwrap() as i64 * 1000);
    assert!(l2 >= 1000);
    meter.shutdown().await;
    audit_passes(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn fifty_concurrent_sessions_drain_one_card_without_overdraft(pool: PgPool) {
    let u = user(&pool).await;
    let c = card(&pool, u, 1).await;
    // Two meters stand for two workers sharing the user's card.
    let a = Meter::start(pool.clone(), fast_config());
    let b = Meter::start(pool.clone(), fast_config());
    let mut sessions = Vec::new();
    for i in 0..50 {
        let m = if i % 2 == 0 { &a } else { &b };
        match m.open(open_spec(u, "1.5")).await {
            Ok(s) => sessions.push(s),
            Err(metering::Error::InsufficientBalance { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(sessions.len() >= 10, "opened {}", sessions.len());
    let mut rows = Vec::new();
    for mut s in sessions {
        let _ = wait_for(&mut s, &MeterEvent::Exhausted, Duration::from_secs(15)).await;
        rows.push(s.close(EndReason::BalanceExhausted).await.unwrap());
    }
    let (ledger, spent, status) = card_books(&pool, c.id).await;
    assert_eq!((ledger, spent, status.as_str()), (60_000, 60_000, "used"));
    let charged: i64 = sqlx::query_scalar("SELECT SUM(charged_ms)::int8 FROM voice_sessions WHERE user_id = $1")
        .bind(u)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(charged, 60_000);
    a.shutdown().await;
    b.shutdown().await;
    audit_passes(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_replayed_tick_is_applied_once(pool: PgPool) {
    let u = user(&pool).await;
    let c = card(&pool, u, 1).await;
    let store = metering::store::Store::new(pool.clone());
    let id = store.open(&open_spec(u, "2"), Utc::now()).await.unwrap();
    let tick = TickEntry {
        session: id,
        user: u,
        seq_from: 1,
        seq_to: 3,
        amount: Millis(6000),
        metered_ms: 3000,
        earned_ok: false,
    };
    let first = store.apply_ticks(std::slice::from_ref(&tick)).await.unwrap();
    assert_eq!(first.results[0].1, TickResult::Applied { applied: Millis(6000), short: Millis::ZERO });
    let again = store.apply_ticks(std::slice::from_ref(&tick)).await.unwrap();
    assert_eq!(again.results[0].1, TickResult::AlreadyApplied);
    let gap = TickEntry { seq_from: 5, seq_to: 5, ..tick };
    let out = store.apply_ticks(&[gap]).await.unwrap();
    assert_eq!(out.results[0].1, TickResult::OutOfOrder { last: 3 });
    assert_eq!(card_books(&pool, c.id).await.0, 6000);
    audit_passes(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_crashed_workers_session_is_closed_from_its_heartbeat(pool: PgPool) {
    let u = user(&pool).await;
    card(&pool, u, 10).await;
    // The crashing worker runs on a runtime of its own, dropped mid-session:
    // its tasks vanish without a last write, as in a SIGKILL.
    let opts = (*pool.connect_options()).clone();
    let session = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let id = rt.block_on(async move {
            let p = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect_with(opts).await.unwrap();
            let meter = Meter::start(p, fast_config());
            let s = meter.open(open_spec(u, "1")).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2600)).await;
            let id = s.id();
            std::mem::forget(s);
            std::mem::forget(meter);
            id
        });
        drop(rt);
        id
    })
    .join()
    .unwrap();
    let survivor = Meter::start(pool.clone(), fast_config());
    let mut reaped = survivor.reaped();
    let mut closed = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let st: String = sqlx::query_scalar("SELECT status FROM voice_sessions WHERE id = $1")
            .bind(session)
            .fetch_one(&pool)
            .await
            .unwrap();
        if st != "active" {
            closed = true;
            break;
        }
    }
    assert!(closed, "the orphan was not reaped");
    let (status, reason, end_is_heartbeat, charged, duration): (String, String, bool, i64, i32) = sqlx::query_as(
        "SELECT status, end_reason, end_time = heartbeat_at, charged_ms, duration_seconds FROM voice_sessions WHERE id = $1",
    )
    .bind(session)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), reason.as_str(), end_is_heartbeat), ("error", "orphaned", true));
    assert_eq!(charged, i64::from(duration) * 1000, "exactly what its ticks charged");
    assert!((1..=2).contains(&duration), "charged to within one tick of the crash: {duration}");
    // The owner hears which sessions it closed (to tell their users).
    let batch = tokio::time::timeout(Duration::from_secs(5), reaped.recv()).await.unwrap().unwrap();
    assert_eq!(batch, vec![session], "the reaped batch names the orphan");
    survivor.shutdown().await;
    audit_passes(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn charges_survive_a_database_outage_and_are_written_once(pool: PgPool) {
    let u = user(&pool).await;
    let c = card(&pool, u, 10).await;
    let proxy = Proxy::start(pg_addr()).await;
    let opts = (*pool.connect_options()).clone().host("127.0.0.1").port(proxy.addr.port());
    let cut_pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .max_connections(4)
        .connect_with(opts)
        .await
        .unwrap();
    let meter = Meter::start(cut_pool, fast_config());
    let mut s = meter.open(open_spec(u, "1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    proxy.cut();
    // Past the 2 s grace the owner is told to end the session.
    let seen = wait_for(&mut s, &MeterEvent::DatabaseUnavailable, Duration::from_secs(8)).await;
    assert!(seen.contains(&MeterEvent::DatabaseUnavailable));
    let during: i64 = sqlx::query_scalar("SELECT charged_ms FROM voice_sessions WHERE id = $1")
        .bind(s.id())
        .fetch_one(&pool)
        .await
        .unwrap();
    let id = s.id();
    let closing = tokio::spawn(s.close(EndReason::DbUnavailable));
    // Outlast the 3 s heartbeat timeout: the meter's own reaper must leave
    // the session it still holds charges for alone.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    proxy.restore();
    let row = tokio::time::timeout(Duration::from_secs(10), closing).await.unwrap().unwrap().unwrap();
    let secs = row.duration_seconds.unwrap() as i64;
    assert!(secs >= 3, "the seconds during the outage count: {secs}");
    assert!(during < secs * 1000, "some charges were kept during the outage");
    let (ledger, spent, _) = card_books(&pool, c.id).await;
    assert_eq!((ledger, spent), (secs * 1000, secs * 1000), "every kept charge written once");
    let reason: String = sqlx::query_scalar("SELECT end_reason FROM voice_sessions WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(reason, "db_unavailable");
    meter.shutdown().await;
    audit_passes(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_card_activated_mid_session_extends_it_and_the_warned_session_is_told(pool: PgPool) {
    let u = user(&pool).await;
    card(&pool, u, 1).await; // 4 s at 15x
    let mut cfg = fast_config();
    cfg.warnings = vec![Duration::from_secs(2)];
    let meter = Meter::start(pool.clone(), cfg);
    let mut s = meter.open(open_spec(u, "15")).await.unwrap();
    wait_for(&mut s, &MeterEvent::Warning { remaining: Duration::ZERO }, Duration::from_secs(5)).await;
    card(&pool, u, 2).await;
    let seen = wait_for(&mut s, &MeterEvent::Extended { remaining: Duration::ZERO }, Duration::from_secs(5)).await;
    let Some(MeterEvent::Extended { remaining }) = seen.last() else { unreachable!() };
    assert!(*remaining > Duration::from_secs(6), "{remaining:?}");
    // Past where the first card alone would have run out.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(!s.snapshot().exhausted);
    let row = s.close(EndReason::UserLeft).await.unwrap();
    let secs = row.duration_seconds.unwrap() as i64;
    assert!(secs >= 5, "{secs}");
    let charged: i64 = sqlx::query_scalar("SELECT charged_ms FROM voice_sessions WHERE id = $1")
        .bind(row.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(charged, secs * 15_000);
    meter.shutdown().await;
    audit_passes(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn paused_time_is_not_charged(pool: PgPool) {
    let u = user(&pool).await;
    let c = card(&pool, u, 10).await;
    let meter = Meter::start(pool.clone(), fast_config());
    let s = meter.open(open_spec(u, "1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.pause();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    s.resume();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let row = s.close(EndReason::UserLeft).await.unwrap();
    let metered: i64 = sqlx::query_scalar("SELECT metered_ms FROM voice_sessions WHERE id = $1")
        .bind(row.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(metered, 2000, "1.5 s + 1.0 s live: two whole seconds");
    assert_eq!(card_books(&pool, c.id).await.0, 2000);
    meter.shutdown().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_session_closed_elsewhere_stops_charging_and_tells_its_owner(pool: PgPool) {
    let u = user(&pool).await;
    let c = card(&pool, u, 10).await;
    let meter = Meter::start(pool.clone(), fast_config());
    let spec = open_spec(u, "1");
    let room = spec.room.clone();
    let mut s = meter.open(spec).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    // The room is gone (a LiveKit webhook, another worker): closed under the meter.
    let closed = meter.store().close_room_sessions(&room, None, EndReason::RoomClosed).await.unwrap();
    assert_eq!(closed, vec![s.id()]);
    wait_for(&mut s, &MeterEvent::ClosedElsewhere, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ledger, spent, _) = card_books(&pool, c.id).await;
    let (charged, reason): (i64, String) =
        sqlx::query_as("SELECT charged_ms, end_reason FROM voice_sessions WHERE id = $1")
            .bind(s.id())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(reason, "room_closed");
    assert_eq!((ledger, spent), (charged, charged));
    assert!(charged <= 2000, "nothing charged after the close: {charged}");
    assert!(matches!(s.close(EndReason::UserLeft).await, Err(metering::Error::SessionClosed { .. })));
    meter.shutdown().await;
    audit_passes(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn closing_writes_the_persona_session_and_counts_a_custom_personas_use(pool: PgPool) {
    let u = user(&pool).await;
    card(&pool, u, 10).await;
    sqlx::query(
        "INSERT INTO custom_personas (user_id, slug, name, config, system_prompt) VALUES ($1, 'my-coach', 'Mine', '{}', 'Be kind.')",
    )
    .bind(u)
    .execute(&pool)
    .await
    .unwrap();
    let meter = Meter::start(pool.clone(), fast_config());
    for _ in 0..2 {
        let mut spec = open_spec(u, "1.5");
        spec.persona_slug = "my-coach".into();
        let key = spec.session_key.clone();
        let s = meter.open(spec).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let row = s.close(EndReason::UserLeft).await.unwrap();
        let (slug, minutes, multiplier): (String, i32, String) = sqlx::query_as(
            "SELECT persona_slug, duration_minutes, cost_multiplier::text FROM persona_sessions WHERE session_id = $1",
        )
        .bind(&key)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!((slug.as_str(), minutes, multiplier.as_str()), ("my-coach", 1, "1.5"));
        assert_eq!(row.session_id, key);
    }
    let uses: i32 = sqlx::query_scalar("SELECT usage_count FROM custom_personas WHERE slug = 'my-coach'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(uses, 2);
    meter.shutdown().await;
    audit_passes(&pool).await;
}

/// (status, end_reason, metered_ms, charged_ms) of a session row.
async fn books_of(pool: &PgPool, id: metering::SessionId) -> (String, Option<String>, i64, i64) {
    sqlx::query_as("SELECT status, end_reason, metered_ms, charged_ms FROM voice_sessions WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_second_open_for_the_same_job_or_room_and_user_is_refused_and_charged_nothing(pool: PgPool) {
    let u = user(&pool).await;
    let c = card(&pool, u, 10).await;
    let meter = Meter::start(pool.clone(), fast_config());
    let spec = open_spec(u, "1");
    let first = meter.open(spec.clone()).await.unwrap();
    // The same job re-offered (another room name cannot make it a new job),
    // and the same user in the same room under another job.
    let mut same_job = open_spec(u, "1");
    same_job.session_key.clone_from(&spec.session_key);
    let mut same_room = open_spec(u, "1");
    same_room.room.clone_from(&spec.room);
    for second in [same_job, same_room] {
        match meter.open(second).await {
            Err(metering::Error::DuplicateSession { job, room }) => {
                assert!(job == spec.session_key || room == spec.room, "{job} {room}")
            }
            Err(other) => panic!("expected DuplicateSession, got {other}"),
            Ok(s) => panic!("a second session {} was opened", s.id()),
        }
    }
    assert_eq!(meter.live_sessions(), 1, "no second meter");
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let row = first.close(EndReason::UserLeft).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM voice_sessions").fetch_one(&pool).await.unwrap();
    assert_eq!(rows, 1);
    let (ledger, spent, _) = card_books(&pool, c.id).await;
    assert_eq!(ledger, row.duration_seconds.unwrap() as i64 * 1000, "only the first session is charged");
    assert_eq!(spent, ledger);
    // Once it is closed, the job may run again (a new session).
    let again = meter.open(spec).await.unwrap();
    again.close(EndReason::UserLeft).await.unwrap();
    meter.shutdown().await;
    audit_passes(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn opening_a_session_consumes_the_reservation_of_its_room(pool: PgPool) {
    use metering::reservations::{self, Limits, Reservation};
    let u = user(&pool).await;
    card(&pool, u, 10).await;
    let spec = open_spec(u, "1");
    let hold = |room: &str| Reservation {
        user: u,
        room: room.to_string(),
        persona_slug: "tutor".into(),
        ttl: std::time::Duration::from_secs(600),
    };
    let limits = Limits { max_open: 2, one_per_persona: false };
    reservations::reserve(&pool, &hold(&spec.room), limits).await.unwrap();
    reservations::reserve(&pool, &hold("another-room"), limits).await.unwrap();
    let full = reservations::reserve(&pool, &hold("third-room"), limits).await.unwrap_err();
    assert!(matches!(full, metering::Error::TooManySessions { open: 2, max: 2 }), "{full}");
    // The worker opens the first room's session: the reservation becomes the
    // session, which still holds one place.
    let meter = Meter::start(pool.clone(), fast_config());
    let s = meter.open(spec.clone()).await.unwrap();
    let live: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM session_reservations WHERE consumed_at IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(live, 1);
    reservations::reserve(&pool, &hold("third-room"), limits).await.unwrap_err();
    // A refused room gives its place back; a closed session does too.
    reservations::release(&pool, u, "another-room").await.unwrap();
    s.close(EndReason::UserLeft).await.unwrap();
    reservations::reserve(&pool, &hold("third-room"), limits).await.unwrap();
    reservations::reserve(&pool, &hold("fourth-room"), limits).await.unwrap();
    meter.shutdown().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_stopped_session_charges_up_to_its_cap_and_nothing_after(pool: PgPool) {
    let u = user(&pool).await;
    let c = card(&pool, u, 10).await;
    let meter = Meter::start(pool.clone(), fast_config());
    let s = meter.open(open_spec(u, "1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2600)).await;
    // The end is decided with a 2-second cap: the hang-up that follows takes time, free.
    s.stop(Some(Duration::from_secs(2)));
    s.resume();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let id = s.id();
    s.close(EndReason::TimeLimit).await.unwrap();
    let (status, reason, metered, charged) = books_of(&pool, id).await;
    assert_eq!((status.as_str(), reason.as_deref(), metered, charged), ("completed", Some("time_limit"), 2000, 2000));
    assert_eq!(card_books(&pool, c.id).await.0, 2000);
    meter.shutdown().await;
    audit_passes(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_session_whose_task_panics_is_closed_with_status_error_and_charged_no_more(pool: PgPool) {
    let u = user(&pool).await;
    let c = card(&pool, u, 10).await;
    let meter = std::sync::Arc::new(Meter::start(pool.clone(), fast_config()));
    let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
    let m = meter.clone();
    let (lived_tx, lived_rx) = std::sync::mpsc::channel();
    let task = tokio::spawn(async move {
        let asked = std::time::Instant::now();
        let s = m.open(open_spec(u, "1")).await.unwrap();
        let opened = std::time::Instant::now();
        opened_tx.send(s.id()).unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // What the session lived at least and at most, up to the panic. The
        // handle drops only after the panic hook has run (printing a
        // backtrace took over 450 ms in CI), and is closed at the panic.
        lived_tx.send((opened.elapsed(), asked.elapsed())).unwrap();
        panic!("forced for the test");
    });
    let id = opened_rx.await.unwrap();
    assert!(task.await.unwrap_err().is_panic());
    let (least, most) = lived_rx.recv().unwrap();
    let whole = |d: Duration| d.as_secs() as i64 * 1000;
    let mut row = books_of(&pool, id).await;
    for _ in 0..50 {
        if row.0 != "active" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        row = books_of(&pool, id).await;
    }
    assert_eq!((row.0.as_str(), row.1.as_deref()), ("error", Some("error")), "{row:?}");
    let charged = row.3;
    assert!(
        (whole(least)..=whole(most + Duration::from_millis(50))).contains(&charged),
        "the whole seconds lived before the panic ({least:?} to {most:?}), nothing after: {charged}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(books_of(&pool, id).await.3, charged);
    assert_eq!(card_books(&pool, c.id).await.0, charged);
    assert_eq!(meter.live_sessions(), 0);
    meter.shutdown().await;
    audit_passes(&pool).await;
}

/// A completed session of `job` in `room`, charged one second, between two
/// SQL time expressions (written directly: the audit is what is under test).
async fn closed_session(pool: &PgPool, user: metering::UserId, job: &str, room: &str, start: &str, end: &str) {
    sqlx::query(&format!(
        "INSERT INTO voice_sessions (user_id, session_id, room_name, start_time, end_time, status, metered_ms, charged_ms) \
         VALUES ($1, $2, $3, {start}, {end}, 'completed', 1000, 1000)"
    ))
    .bind(user)
    .bind(job)
    .bind(room)
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn the_audit_flags_two_charged_sessions_of_one_job_that_overlap(pool: PgPool) {
    let u = user(&pool).await;
    for (start, end) in
        [("NOW() - INTERVAL '10 min'", "NOW() - INTERVAL '5 min'"), ("NOW() - INTERVAL '8 min'", "NOW()")]
    {
        closed_session(&pool, u, "job-twice", "room-twice", start, end).await;
    }
    let report = audit::audit(&pool).await.unwrap();
    let check = report.checks.iter().find(|c| c.name == "one_charge_per_job").unwrap();
    assert_eq!(check.violation_count, 1, "{report}");
    assert!(check.violations[0].contains("job-twice"), "{report}");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_audit_flags_two_charged_jobs_of_one_user_in_one_room_that_overlap_and_passes_apart_ones(pool: PgPool) {
    let u = user(&pool).await;
    let rows = [
        ("job-a", "room-shared", "NOW() - INTERVAL '10 min'", "NOW() - INTERVAL '5 min'"),
        ("job-b", "room-shared", "NOW() - INTERVAL '8 min'", "NOW()"),
        // Another room, overlapping in time: not the same charge.
        ("job-c", "room-other", "NOW() - INTERVAL '8 min'", "NOW()"),
    ];
    for (job, room, start, end) in rows {
        closed_session(&pool, u, job, room, start, end).await;
    }
    let report = audit::audit(&pool).await.unwrap();
    let check = report.checks.iter().find(|c| c.name == "one_charge_per_job").unwrap();
    assert_eq!(check.violation_count, 1, "{report}");
    assert!(check.violations[0].contains("room-shared"), "{report}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_daily_limited_persona_opens_one_session_per_user_at_a_time(pool: PgPool) {
    use metering::session::OpenRules;
    let u = user(&pool).await;
    card(&pool, u, 10).await;
    let meter = Meter::start(pool.clone(), fast_config());
    let rules = OpenRules { one_per_persona: true };
    let first = meter.open_with(open_spec(u, "1"), rules).await.unwrap();
    match meter.open_with(open_spec(u, "1"), rules).await {
        Err(metering::Error::PersonaSessionOpen { persona }) => assert_eq!(persona, "tutor"),
        Err(other) => panic!("expected PersonaSessionOpen, got {other}"),
        Ok(s) => panic!("a parallel session {} was opened", s.id()),
    }
    let mut other = open_spec(u, "1");
    other.persona_slug = "another".into();
    let second = meter.open_with(other, rules).await.unwrap();
    first.close(EndReason::UserLeft).await.unwrap();
    meter.open_with(open_spec(u, "1"), rules).await.unwrap().close(EndReason::UserLeft).await.unwrap();
    second.close(EndReason::UserLeft).await.unwrap();
    meter.shutdown().await;
    audit_passes(&pool).await;
}

/// (metered_ms, charged_ms, rate_ms_per_second) of a session row.
async fn metered_charged_rate(pool: &PgPool, id: metering::SessionId) -> (i64, i64, i64) {
    sqlx::query_as("SELECT metered_ms, charged_ms, rate_ms_per_second::int8 FROM voice_sessions WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn sessions_running_out_together_each_pay_only_for_their_own_last_fraction(pool: PgPool) {
    let u = user(&pool).await;
    let c = card(&pool, u, 1).await;
    // Two sessions at 16x spend 32 s of card a second: the minute runs out
    // 1.875 s in, so the last 28 s of card pay for the final 0.875 s of both.
    let meter = Meter::start(pool.clone(), fast_config());
    let mut first = meter.open(open_spec(u, "16")).await.unwrap();
    let mut second = meter.open(open_spec(u, "16")).await.unwrap();
    wait_for(&mut first, &MeterEvent::Exhausted, Duration::from_secs(10)).await;
    wait_for(&mut second, &MeterEvent::Exhausted, Duration::from_secs(10)).await;
    let mut total = 0;
    for s in [first, second] {
        let row = s.close(EndReason::BalanceExhausted).await.unwrap();
        let (metered, charged, rate) = metered_charged_rate(&pool, row.id).await;
        // Exact cost of the metered time, rounded up to the millisecond.
        let exact = (metered * rate + 999) / 1000;
        assert!(charged <= exact, "charged {charged} ms for {metered} ms at {rate} ms/s (exact cost {exact})");
        assert!(metered > 1000, "each session lived past its first second: {metered}");
        total += charged;
    }
    assert_eq!(total, 60_000, "together they spend the whole card");
    assert_eq!(card_books(&pool, c.id).await, (60_000, 60_000, "used".to_string()));
    meter.shutdown().await;
    audit_passes(&pool).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_second_still_owed_when_the_balance_runs_out_is_charged_once(pool: PgPool) {
    let u = user(&pool).await;
    let c = card(&pool, u, 1).await; // 4.8 s at 12.5x
                                     // A slow database: a batch that waits 300 ms counts as failed and its
                                     // charges are kept, to be resent as they are.
    let mut cfg = fast_config();
    cfg.write_timeout = Duration::from_millis(300);
    let meter = Meter::start(pool.clone(), cfg);
    let mut s = meter.open(open_spec(u, "12.5")).await.unwrap();
    let id = s.id();
    // Wait until three seconds are charged, then hold the card's row lock in
    // another transaction: the batches carrying the fourth second wait on
    // it and time out, so that second is still owed when the balance runs
    // out at 4.8 s.
    while metered_charged_rate(&pool, id).await.1 < 37_500 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM time_cards WHERE id = $1 FOR UPDATE").bind(c.id).execute(&mut *blocker).await.unwrap();
    let (metered, charged, _) = metered_charged_rate(&pool, id).await;
    assert_eq!((metered, charged), (3000, 37_500), "the lock was taken before the fourth second was written");
    wait_for(&mut s, &MeterEvent::Exhausted, Duration::from_secs(10)).await;
    blocker.commit().await.unwrap();
    let row = s.close(EndReason::BalanceExhausted).await.unwrap();
    let (metered, charged, _) = metered_charged_rate(&pool, id).await;
    assert_eq!((metered, charged), (4800, 60_000), "four whole seconds and the last 0.8 s, each once");
    assert_eq!(row.duration_seconds, Some(4));
    assert_eq!(card_books(&pool, c.id).await, (60_000, 60_000, "used".to_string()));
    meter.shutdown().await;
    audit_passes(&pool).await;
}

/// A client that stops sending and listens on, then leaves, is forgiven the
/// agent's talking since its last audio at most 5 s a session and 15 s an
/// hour over its user's sessions: each session's share is written with it,
/// and the next session of the hour has only what is left.
#[sqlx::test(migrations = "../migrations")]
async fn the_agents_talking_is_forgiven_at_most_fifteen_seconds_an_hour_over_a_users_sessions(pool: PgPool) {
    use metering::meter::state::{Pause, Presence};
    use tokio::time::Instant;

    let u = user(&pool).await;
    card(&pool, u, 10).await;
    // Two sessions earlier this hour, forgiven 5 s each; one the hour before.
    for (n, ago) in [(1, "10 min"), (2, "20 min"), (3, "70 min")] {
        sqlx::query(&format!(
            "INSERT INTO voice_sessions (user_id, session_id, room_name, start_time, end_time, status, forgiven_ms) \
             VALUES ($1, 'earlier-{n}', 'earlier-{n}', NOW() - INTERVAL '{ago}', NOW() - INTERVAL '{ago}' + INTERVAL '1 min', \
             'completed', 5000)"
        ))
        .bind(u)
        .execute(&pool)
        .await
        .unwrap();
    }
    let meter = Meter::start(pool.clone(), fast_config());
    // Heard once at the start, then silent while the agent talks; the leave
    // comes `after` later. Returns what the leave took back and the row's
    // forgiven_ms once closed.
    let visit = |after: Duration| {
        let (meter, pool) = (&meter, &pool);
        async move {
            let s = meter.open(open_spec(u, "1")).await.unwrap();
            let heard = Instant::now();
            s.set_presence(Presence::new(move || Some(heard)).with_spoken(|| Some(Instant::now())));
            tokio::time::sleep(after).await;
            let taken = s.pause_from_last_heard(Pause::UserLeft);
            let row = s.close(EndReason::UserLeft).await.unwrap();
            let forgiven: i64 = sqlx::query_scalar("SELECT forgiven_ms FROM voice_sessions WHERE id = $1")
                .bind(row.id)
                .fetch_one(pool)
                .await
                .unwrap();
            (taken.as_millis() as i64, forgiven)
        }
    };
    // 5 s left this hour: 2 s of talking after the 0.5 s quiet, all forgiven.
    let (first, forgiven) = visit(Duration::from_millis(2_500)).await;
    assert!((1_950..=2_100).contains(&first), "took back {first} ms");
    assert_eq!(forgiven, first, "the row holds what was forgiven");
    // What is left of the hour's 15 s (the session 70 min ago does not
    // count): 4 s of talking, that much of it forgiven.
    let (taken, forgiven) = visit(Duration::from_millis(4_500)).await;
    assert_eq!((taken, forgiven), (5_000 - first, 5_000 - first));
    // None left: the talking is charged.
    let (taken, forgiven) = visit(Duration::from_millis(1_500)).await;
    assert_eq!((taken, forgiven), (0, 0));
    meter.shutdown().await;
    audit_passes(&pool).await;
}
