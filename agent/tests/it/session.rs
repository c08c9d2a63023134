//! The worker end to end: `mindbot-agent run` registers with the real
//! LiveKit server, LiveKit dispatches it to a room the Python end user joins
//! with a dispatch token, the session is metered against the real PostgreSQL,
//! and the user is hung up when the balance runs out.

use std::time::Duration;

use crate::e2e::*;
use serde_json::Value;
use sqlx::PgPool;

#[sqlx::test(migrations = "../migrations")]
async fn a_user_whose_balance_runs_out_is_warned_and_hung_up(pool: PgPool) {
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    let agent_name = format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    let (mut w, port) = worker_process(&pool, &agent_name, &[("MINDBOT_METER_WARNINGS_SECONDS", "[20, 10]")]).await;
    assert_eq!(get(port, "/healthz").await.0, 200);
    let (code, body) = get(port, "/readyz").await;
    assert_eq!(code, 200, "{body}");

    // 90 s of card at the 1.5x persona (basic level: a subscription grants
    // it): 60 s of conversation. The card held two minutes; an earlier
    // 20 s session at 1.5 spent 30 s of it.
    let user = user_with_card(&pool, 2).await;
    spent_earlier(&pool, user, "late-night-comic", 20, 1500).await;
    mindbot_tests::db::subscribe(&pool, user, "basic_monthly").await;
    let room = format!("session-{}", uuid::Uuid::new_v4().simple());
    let meta = serde_json::json!({"user_id": user.to_string(), "persona": "late-night-comic", "age": 30});
    let token = dispatch_token(&room, &user.to_string(), &agent_name, &meta).await;
    let report =
        visit(&token, &["--expect-data", "mindbot.balance", "--expect-data", "mindbot.session", "--stay", "90"]).await;
    eprintln!("user report: {report}");

    assert_eq!(report["disconnect_reason"], "PARTICIPANT_REMOVED", "{report}");
    let duration = report["duration"].as_f64().unwrap();
    let data = report["data"].as_array().unwrap();
    let json_of = |d: &Value| serde_json::from_str::<Value>(d["text"].as_str().unwrap_or("")).unwrap_or(Value::Null);
    // The user's own clock: from the session's start message to being removed.
    let started_at = data.iter().find(|d| json_of(d)["type"] == "started").and_then(|d| d["at"].as_f64());
    let talked = duration - started_at.expect("a started message");
    assert!((60.0..61.0).contains(&talked), "hung up 60 s into the session (within a second): {talked:.3} s");
    let of_type = |topic: &str, t: &str| data.iter().filter(|d| d["topic"] == topic && json_of(d)["type"] == t).count();
    assert_eq!(of_type("mindbot.session", "started"), 1, "{data:?}");
    assert!(of_type("mindbot.balance", "balance") >= 1, "{data:?}");
    assert_eq!(of_type("mindbot.balance", "warning"), 2, "{data:?}");
    assert_eq!(of_type("mindbot.session", "ended"), 1, "{data:?}");
    assert!(data.iter().any(|d| json_of(d)["reason"] == "balance_exhausted"), "{data:?}");

    // The books: exactly the card, to the millisecond; 60 s of talk.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, reason, charged, metered): (String, String, i64, i64) =
        sqlx::query_as("SELECT status, end_reason, charged_ms, metered_ms FROM voice_sessions WHERE room_name = $1")
            .bind(&room)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str(), charged, metered),
        ("completed", "balance_exhausted", 90_000, 60_000)
    );
    let card: String = sqlx::query_scalar("SELECT status FROM time_cards WHERE user_id = $1")
        .bind(user)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(card, "used");
    let audit = metering::audit::audit(&pool).await.unwrap();
    assert!(audit.passed(), "{audit}");

    // What Prometheus would scrape agrees with the database.
    let (code, text) = get(port, "/metrics").await;
    assert_eq!(code, 200);
    let billed = sample(&text, "mindbot_billed_seconds_total{persona=\"late-night-comic\"}");
    assert_eq!(billed, Some((metered / 1000) as f64), "{text}");
    let charged_s = sample(&text, "mindbot_card_time_charged_seconds_total{persona=\"late-night-comic\"}");
    assert_eq!(charged_s, Some((charged / 1000) as f64), "{text}");
    let ended = text.lines().any(|l| {
        l.starts_with("mindbot_sessions_ended_total{")
            && l.contains("reason=\"balance_exhausted\"")
            && l.ends_with(" 1")
    });
    assert!(ended, "{text}");
    assert!(text.contains("mindbot_hangup_latency_seconds_count 1"), "{text}");
    assert!(text.contains("mindbot_meter_tick_duration_seconds_bucket"), "{text}");

    // SIGTERM: the idle worker drains and exits cleanly.
    let pid = w.id().unwrap() as i32;
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), w.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_user_without_balance_is_refused_with_a_reason_and_not_charged(pool: PgPool) {
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    let agent_name = format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    let (_w, port) = worker(&pool, &agent_name, &[]).await;
    let user = user_with_card(&pool, 1).await;
    sqlx::query("UPDATE time_cards SET status = 'expired' WHERE user_id = $1").bind(user).execute(&pool).await.unwrap();
    let room = format!("refused-{}", uuid::Uuid::new_v4().simple());
    let meta = serde_json::json!({"user_id": user.to_string(), "persona": "professor-ada"});
    let token = dispatch_token(&room, &user.to_string(), &agent_name, &meta).await;
    let report = visit(&token, &["--expect-data", "mindbot.session", "--stay", "12"]).await;
    let refused = messages(&report, "mindbot.session");
    assert_eq!(refused.len(), 1, "{report}");
    assert_eq!(
        (refused[0]["type"].as_str(), refused[0]["reason"].as_str()),
        (Some("refused"), Some("insufficient_balance"))
    );
    let sessions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM voice_sessions").fetch_one(&pool).await.unwrap();
    assert_eq!(sessions, 0, "a refusal opens no session and charges nothing");
    let (_, text) = get(port, "/metrics").await;
    assert_eq!(sample(&text, "mindbot_sessions_refused_total{reason=\"insufficient_balance\"}"), Some(1.0), "{text}");
}

/// Charging follows LiveKit's word that the user is in the room, and in a
/// cluster that word can come seconds late (relayed between nodes). A user
/// whose audio stopped before the leave came is charged to their last
/// audio; a user who muted gives no such sign and is charged to the leave;
/// a quiet user whose card runs out before any leave is charged to their
/// last audio too.
#[sqlx::test(migrations = "../migrations")]
async fn a_leave_after_the_audio_stopped_is_charged_to_the_audio_and_a_muted_user_to_the_leave(pool: PgPool) {
    use mindbot_transport::room::ConnectOptions;

    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    let agent_name = format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    let (_w, port) = worker(&pool, &agent_name, &[("MINDBOT_WORKER_USER_GRACE_SECONDS", "1")]).await;
    let (_, quiet_room, quiet_token) = funded_call(&pool, "late-leave", &agent_name, "professor-ada").await;
    let (_, muted_room, muted_token) = funded_call(&pool, "muted-leave", &agent_name, "professor-ada").await;
    // A one-minute card with 9 s left: an earlier session spent 51 s of it.
    let broke = user_with_card(&pool, 1).await;
    spent_earlier(&pool, broke, "professor-ada", 51, 1000).await;
    let broke_room = format!("quiet-at-zero-{}", uuid::Uuid::new_v4().simple());
    let meta = serde_json::json!({"user_id": broke.to_string(), "persona": "professor-ada"});
    let broke_token = dispatch_token(&broke_room, &broke.to_string(), &agent_name, &meta).await;

    // The muted user (LiveKit's Python SDK): a tone, muted 3 s in, leaves at 6 s.
    let muted = tokio::spawn(async move {
        visit(&muted_token, &["--expect-data", "mindbot.session", "--mute-after", "3", "--stay", "6"]).await
    });

    // A quiet user whose 9 s card runs out in their quiet (what a user whose
    // client died looks like to the agent until LiveKit drops them): a tone
    // for 3 s after `started`, then nothing, and no leave. The agent hangs
    // up at zero; the quiet it was holding back is not charged, since the
    // user was not heard again before the session closed.
    let at_zero = tokio::spawn(async move {
        let options =
            ConnectOptions { subscribe_audio: false, audio_buffer: Duration::from_millis(100), ..Default::default() };
        let (user, tone, _, started) = toned_user(&broke_token, options).await;
        tokio::time::sleep_until(started + Duration::from_secs(3)).await;
        tone.abort();
        let silent_from = started.elapsed();
        // Held until the session closed (the agent removes us at zero).
        (user, silent_from)
    });

    // The quiet user (this project's room client, which sends nothing when
    // it has nothing to say): a tone for 3 s after `started`, then no audio
    // for 7.6 s, then the leave (what a leave lost with a LiveKit node looks
    // like to the agent). The agent (voice off) says nothing meanwhile, so
    // the whole quiet is taken back, past the 5 s a session is forgiven of
    // quiet the agent talked through.
    let options =
        ConnectOptions { subscribe_audio: false, audio_buffer: Duration::from_millis(100), ..Default::default() };
    let (user, tone, _, started) = toned_user(&quiet_token, options).await;
    tokio::time::sleep_until(started + Duration::from_secs(3)).await;
    tone.abort();
    let silent_from = started.elapsed();
    tokio::time::sleep(Duration::from_millis(7600)).await;
    user.leave().await.unwrap();
    let seen = started.elapsed();
    let muted = muted.await.unwrap();
    let (_broke_user, broke_silent_from) = at_zero.await.unwrap();
    eprintln!("quiet user: audio to {silent_from:?}, left at {seen:?}; muted user: {muted}");

    let (quiet_ms, quiet_reason) = closed_session(&pool, &quiet_room).await;
    let (muted_ms, muted_reason) = closed_session(&pool, &muted_room).await;
    assert_eq!((quiet_reason.as_str(), muted_reason.as_str()), ("user_left", "user_left"));
    // Whole seconds lived up to the last audio (3 s after `started`, plus
    // the moment `started` took to arrive), not up to the leave (10.6 s).
    assert!(
        (2_000..=4_000).contains(&quiet_ms),
        "quiet user charged {quiet_ms} ms lived: audio stopped at {silent_from:?}, left at {seen:?}"
    );
    // Muted at 3 s and left at 6 s (the clock started at the join): charged to the leave.
    let muted_at = muted["published"]["muted_at"].as_f64().expect("the tone was muted");
    assert!(muted_at >= 3.0, "{muted}");
    assert!(muted_ms >= 5_000, "muted user charged {muted_ms} ms lived, though in the room for 6 s: {muted}");
    // At zero in the quiet: hung up for the balance, charged only the
    // seconds up to the quiet (not the 9 s), and the card keeps the rest.
    let (zero_ms, zero_reason) = closed_session(&pool, &broke_room).await;
    assert_eq!(zero_reason, "balance_exhausted");
    assert!(
        (2_000..=4_600).contains(&zero_ms),
        "user quiet at zero charged {zero_ms} ms lived: audio stopped at {broke_silent_from:?}, card of 9 s"
    );
    let (charged, left): (i64, i64) = sqlx::query_as(
        "SELECT v.charged_ms::BIGINT, (c.remaining_minutes * 60000 + c.remaining_sub_ms)::BIGINT \
         FROM voice_sessions v JOIN time_cards c ON c.user_id = v.user_id WHERE v.room_name = $1",
    )
    .bind(&broke_room)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((charged + left, charged <= 4_000), (9_000, true), "charged {charged} ms, {left} ms left on the card");
    let (_, metrics) = get(port, "/metrics").await;
    assert_eq!(sample(&metrics, "mindbot_late_leaves_total"), Some(1.0), "{metrics}");
    // Every client (LiveKit's Python SDK, and this project's room client
    // answering RPC as the SDKs do) acknowledged the readiness probe.
    assert_eq!(sample(&metrics, "mindbot_session_ready_seconds_count"), Some(3.0), "{metrics}");
    assert_eq!(sample(&metrics, "mindbot_session_ready_timeouts_total"), Some(0.0), "{metrics}");
    let audit = metering::audit::audit(&pool).await.unwrap();
    assert!(audit.passed(), "{audit}");
}

/// A session that ends while its user is away (here: the grace runs out)
/// deletes its room, so the user coming back creates it again and LiveKit
/// dispatches a new agent, instead of a room without one.
#[sqlx::test(migrations = "../migrations")]
async fn a_user_back_after_the_grace_gets_a_new_agent_in_a_new_room(pool: PgPool) {
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    let agent_name = format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    let (_w, _port) = worker(&pool, &agent_name, &[("MINDBOT_WORKER_USER_GRACE_SECONDS", "1")]).await;
    let (_, room, token) = funded_call(&pool, "back-later", &agent_name, "professor-ada").await;
    let first = visit(&token, &["--expect-data", "mindbot.session", "--stay", "3"]).await;
    assert!(messages(&first, "mindbot.session").iter().any(|m| m["type"] == "started"), "{first}");

    // The grace (1 s) runs out; the room goes with the session, well before
    // LiveKit's own departure timeout (20 s) would have closed it.
    let rooms = mindbot_tests::livekit::rooms(mindbot_tests::livekit::HTTP_URL);
    let mut gone = false;
    for _ in 0..50 {
        if rooms.list_rooms(vec![room.clone()]).await.unwrap().is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the room was not deleted within 5 s of the user leaving");
    let ended: Vec<String> =
        sqlx::query_scalar("SELECT end_reason FROM voice_sessions WHERE room_name = $1 AND end_time IS NOT NULL")
            .bind(&room)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(ended, ["user_left"]);

    // Back with the same token: a new room, a new agent, a new session.
    let second = visit(&token, &["--expect-data", "mindbot.session", "--stay", "3"]).await;
    assert!(messages(&second, "mindbot.session").iter().any(|m| m["type"] == "started"), "{second}");
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM voice_sessions WHERE room_name = $1")
        .bind(&room)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(sessions, 2);
}

/// The session starts when the user's client can receive it: the agent asks
/// with an RPC request, every second, until the client acknowledges one
/// (LiveKit's SDKs do so on receipt, with or without a handler), and only
/// then starts the meter and sends `started`. A client without RPC gets its
/// session after `worker.ready_wait_seconds` anyway, and so does one whose
/// data channel opens after that; its receipt of a later probe then moves
/// the meter's start to when `started` reached it. Either way the user's
/// own clock, from `started` to their leave, is what they are charged.
#[sqlx::test(migrations = "../migrations")]
async fn the_session_starts_once_the_users_client_can_receive_it_and_is_charged_from_there(pool: PgPool) {
    use mindbot_transport::room::ConnectOptions;

    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    let agent_name = format!("mindbot-test-{}", uuid::Uuid::new_v4().simple());
    let (_w, port) = worker(
        &pool,
        &agent_name,
        &[("MINDBOT_WORKER_READY_WAIT_SECONDS", "3"), ("MINDBOT_WORKER_USER_GRACE_SECONDS", "1")],
    )
    .await;
    let (_, sdk_room, sdk_token) = funded_call(&pool, "ready-sdk", &agent_name, "professor-ada").await;
    let (_, old_room, old_token) = funded_call(&pool, "ready-no-rpc", &agent_name, "professor-ada").await;
    let (_, late_room, late_token) = funded_call(&pool, "ready-late", &agent_name, "professor-ada").await;

    // LiveKit's Python SDK, for 6 s.
    let sdk =
        tokio::spawn(async move { visit(&sdk_token, &["--expect-data", "mindbot.session", "--stay", "6"]).await });

    // A client that never answers RPC (this project's room client, with its
    // answers off): its session waits the 3 s out, then starts. It sends a
    // tone, as a user with a microphone does: LiveKit tells the agent of a
    // participant that publishes nothing in batches, up to 3 s late.
    let options = ConnectOptions { subscribe_audio: false, answer_rpc: false, ..Default::default() };
    // And a client whose data channel opens only 6.5 s after it joined (a
    // loaded server): the wait runs out first, and its `started` arrives
    // about 3 s after it went out. It answers RPC, so its receipt of a
    // probe sent after `started` tells the meter when, roughly.
    let late = ConnectOptions {
        subscribe_audio: false,
        data_opens_after: Some(Duration::from_millis(6_500)),
        ..Default::default()
    };
    let visit_for = |token: String, options: ConnectOptions, stay: Duration| async move {
        let (user, tone, connected, started) = toned_user(&token, options).await;
        tokio::time::sleep(stay).await;
        tone.abort();
        user.leave().await.unwrap();
        (started - connected, started.elapsed())
    };
    let ((old_waited, old_seen), (late_waited, late_seen)) = tokio::join!(
        visit_for(old_token, options, Duration::from_secs(4)),
        visit_for(late_token, late, Duration::from_secs(4)),
    );
    // The wait starts when LiveKit tells the agent the user's media is up,
    // which is after this client's own connection is up.
    assert!(old_waited >= Duration::from_millis(2_900), "`started` came {old_waited:?} after the media connected");
    // (Its 6.5 s run from a moment before its connection was up.)
    assert!(late_waited >= Duration::from_millis(5_500), "`started` came {late_waited:?} after the media connected");

    let sdk = sdk.await.unwrap();
    let sdk_started = messages(&sdk, "mindbot.session").iter().find(|m| m["type"] == "started").cloned();
    assert!(sdk_started.is_some(), "{sdk}");
    let at = sdk["data"]
        .as_array()
        .and_then(|d| {
            d.iter().find(|m| {
                m["topic"] == "mindbot.session" && m["text"].as_str().is_some_and(|t| t.contains("\"started\""))
            })
        })
        .and_then(|m| m["at"].as_f64())
        .expect("when `started` came");
    let sdk_seen = Duration::from_secs_f64(sdk["duration"].as_f64().unwrap() - at);

    // The late client's meter counts from its receipt less the lead (1 s),
    // not from `started` going out, 3 s before it could see it: never more
    // whole seconds than the user saw begin.
    let ms = Duration::from_millis;
    let begun = |seen: Duration| ms((seen.as_millis() as u64).div_ceil(1000) * 1000);
    for (who, room, seen, most) in [
        ("SDK user", sdk_room, sdk_seen, sdk_seen + ms(500)),
        ("user without RPC", old_room, old_seen, old_seen + ms(500)),
        ("user whose data channel opened late", late_room, late_seen, begun(late_seen)),
    ] {
        let lived = ms(closed_session(&pool, &room).await.0 as u64);
        eprintln!("{who}: saw {seen:?} from `started` to the leave, metered {lived:?}");
        assert!(lived <= most, "{who} metered {lived:?}, saw {seen:?}");
        assert!(lived + Duration::from_secs(1) >= seen, "{who} metered {lived:?}, saw {seen:?}");
    }
    let (_, text) = get(port, "/metrics").await;
    assert_eq!(sample(&text, "mindbot_session_ready_seconds_count"), Some(1.0), "the SDK user acknowledged: {text}");
    assert_eq!(sample(&text, "mindbot_session_ready_timeouts_total"), Some(2.0), "{text}");
    let audit = metering::audit::audit(&pool).await.unwrap();
    assert!(audit.passed(), "{audit}");
}

/// An earlier completed session of `user` (an hour ago): `seconds` of
/// `persona` at `rate_ms` a second, charged to their one card, which holds
/// that much less, so its books balance.
async fn spent_earlier(pool: &PgPool, user: uuid::Uuid, persona: &str, seconds: i64, rate_ms: i64) {
    let charged = seconds * rate_ms;
    sqlx::query(
        "UPDATE time_cards SET remaining_minutes = (total_minutes * 60000 - $2) / 60000, \
         remaining_sub_ms = (total_minutes * 60000 - $2) % 60000 WHERE user_id = $1",
    )
    .bind(user)
    .bind(charged)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO voice_sessions (user_id, session_id, room_name, start_time, end_time, duration_seconds, \
         cost_minutes, status, end_reason, persona_slug, rate_ms_per_second, metered_ms, charged_ms, last_tick_seq) \
         VALUES ($1, 'earlier', 'earlier', NOW() - INTERVAL '1 hour', NOW() - INTERVAL '1 hour' + $3 * INTERVAL '1 s', \
         $3, ($5 + 59999) / 60000, 'completed', 'user_left', $2, $4, $3 * 1000, $5, $3)",
    )
    .bind(user)
    .bind(persona)
    .bind(seconds as i32)
    .bind(rate_ms as i32)
    .bind(charged)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO card_charges (voice_session_id, time_card_id, charged_ms) \
         SELECT v.id, c.id, v.charged_ms FROM voice_sessions v JOIN time_cards c ON c.user_id = v.user_id \
         WHERE v.user_id = $1",
    )
    .bind(user)
    .execute(pool)
    .await
    .unwrap();
}

/// This project's room client as a user: joins with `token`, sends a 440 Hz
/// tone (until the returned task is aborted), and waits up to 20 s for the
/// agent's `started`. Returns the room, the tone, when the join finished and
/// when `started` came.
async fn toned_user(
    token: &str,
    options: mindbot_transport::room::ConnectOptions,
) -> (mindbot_transport::room::Room, tokio::task::JoinHandle<()>, tokio::time::Instant, tokio::time::Instant) {
    use mindbot_transport::room::{self, RoomEvent};
    let (user, mut events) = room::connect(mindbot_tests::livekit::URL, token, options).await.unwrap();
    let connected = tokio::time::Instant::now();
    let source = user.publish_audio("microphone").await.unwrap();
    let tone = tokio::spawn(async move {
        let pcm: Vec<i16> = (0..48_000)
            .map(|i| ((i as f64 * 440.0 * std::f64::consts::TAU / 48_000.0).sin() * 6000.0) as i16)
            .collect();
        while source.push(&pcm).await.is_ok() {}
    });
    let started = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(e) = events.recv().await {
            if let RoomEvent::Data(d) = e {
                let v: Value = serde_json::from_slice(&d.payload).unwrap_or_default();
                if d.topic.as_deref() == Some("mindbot.session") && v["type"] == "started" {
                    return tokio::time::Instant::now();
                }
            }
        }
        panic!("the room closed before `started`");
    })
    .await
    .expect("`started` within 20 s");
    (user, tone, connected, started)
}

/// The metered milliseconds and end reason of the session in `room`, once
/// it has closed (waits up to 30 s).
async fn closed_session(pool: &PgPool, room: &str) -> (i64, String) {
    for _ in 0..300 {
        let r: Option<(i64, String)> = sqlx::query_as(
            "SELECT metered_ms, end_reason FROM voice_sessions WHERE room_name = $1 AND end_time IS NOT NULL",
        )
        .bind(room)
        .fetch_optional(pool)
        .await
        .unwrap();
        if let Some(r) = r {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the session of {room} did not close");
}
