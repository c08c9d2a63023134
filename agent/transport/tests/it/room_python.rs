//! The agent's room connection against the end user's real client: LiveKit's
//! Python SDK (`tests/clients/participant.py` in the project's venv) on the
//! real server. The user and the agent hear each other's tones, exchange data
//! with topics, and the user still sees the agent after 90 s; text streams
//! (LiveKit's data streams) pass both ways, from a user who publishes no
//! track too, and broken ones are dropped.

use std::process::Stdio;
use std::time::Duration;

use std::collections::HashMap;

use crate::support::*;
use mindbot_tests::root;
use mindbot_transport::room::{OutgoingData, RoomEvent, TextStreamOptions, CHUNK_BYTES};
use serde_json::Value;

/// The Python end user, as a child process printing one JSON report.
fn python_user(args: &[&str]) -> tokio::process::Child {
    let root = root();
    let status = std::process::Command::new("bash")
        .arg(root.join("scripts/python-env.sh"))
        .current_dir(&root)
        .status()
        .expect("running scripts/python-env.sh");
    assert!(status.success(), "scripts/python-env.sh failed");
    tokio::process::Command::new(root.join(".cache/venv/bin/python"))
        .arg(root.join("tests/clients/participant.py"))
        .args(["--url", URL, "--api-key", API_KEY, "--api-secret", API_SECRET])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("starting the Python client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_user_and_the_agent_hear_and_message_each_other_and_the_agent_stays() {
    logs();
    server();
    let room = room_name("python");
    let user = python_user(&[
        "--room",
        &room,
        "--identity",
        "user",
        "--publish-tone",
        "440",
        "--record-seconds",
        "8",
        "--wait-for",
        "agent",
        "--send-delay",
        "2",
        "--send-data",
        "mindbot.test:hello from python",
        "--expect-data",
        "mindbot.agent",
        "--watch-identity",
        "agent",
        "--stay",
        "92",
    ]);
    let (agent, mut events) = join(&room, "agent").await;

    // The agent speaks an 880 Hz tone for the whole visit.
    let source = agent.publish_audio("microphone").await.unwrap();
    let tone: Vec<i16> =
        (0..48_000).map(|i| ((i as f64 * 880.0 * std::f64::consts::TAU / 48_000.0).sin() * 8192.0) as i16).collect();
    let speaker = tokio::spawn(async move { while source.push(&tone).await.is_ok() {} });

    // It hears the user's 440 Hz tone, and the user's message with its topic.
    let mut stream = wait_for(&mut events, Duration::from_secs(20), |e| match e {
        RoomEvent::AudioTrackSubscribed { participant, stream, .. } if participant == "user" => Some(stream),
        _ => None,
    })
    .await;
    let mut pcm = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while pcm.len() < 48_000 * 3 {
            match stream.recv().await {
                Some(frame) => pcm.extend_from_slice(&frame.samples),
                None => break,
            }
        }
    })
    .await
    .expect("3 s of the user's audio");
    let window = &pcm[24_000..];
    let (freq, level) = (frequency(window), rms_dbfs(window));
    eprintln!("agent heard {freq:.1} Hz at {level:.1} dBFS");
    assert!((freq - 440.0).abs() <= 10.0, "frequency {freq:.1} Hz");
    assert!(level > -20.0 && level < -5.0, "level {level:.1} dBFS");

    let (from, topic, text) = wait_for(&mut events, Duration::from_secs(20), |e| match e {
        RoomEvent::Data(m) => Some((m.sender, m.topic, String::from_utf8_lossy(&m.payload).to_string())),
        _ => None,
    })
    .await;
    assert_eq!((from.as_str(), topic.as_deref(), text.as_str()), ("user", Some("mindbot.test"), "hello from python"));
    agent
        .send_data(OutgoingData {
            payload: b"hello from rust".to_vec(),
            topic: Some("mindbot.agent".into()),
            destinations: vec!["user".into()],
            reliable: true,
        })
        .await
        .unwrap();

    // The user stays 92 s and reports what it saw, heard and received.
    let out = tokio::time::timeout(Duration::from_secs(150), user.wait_with_output()).await.unwrap().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("python report: {e}: {}", String::from_utf8_lossy(&out.stdout));
    });
    eprintln!("python user report: {report}");
    assert!(out.status.success(), "{report}");
    let heard = &report["audio"]["agent"];
    let freq = heard["frequency_hz"].as_f64().expect("the user heard the agent");
    assert!((freq - 880.0).abs() <= 10.0, "user heard {freq} Hz");
    assert!(heard["rms_dbfs"].as_f64().unwrap() > -25.0, "{heard}");
    assert!(heard["seconds"].as_f64().unwrap() > 5.0, "{heard}");
    let got = report["data"].as_array().unwrap();
    assert!(
        got.iter().any(|d| d["topic"] == "mindbot.agent" && d["text"] == "hello from rust" && d["from"] == "agent"),
        "{got:?}"
    );
    assert_eq!(report["watched"]["present"], Value::Bool(true), "the agent left: {report}");
    assert!(report["duration"].as_f64().unwrap() >= 90.0, "{report}");
    assert_eq!(listed(&room).await, vec!["agent".to_string()], "the server still lists the agent after 90 s");

    speaker.abort();
    agent.leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_streams_pass_both_ways_with_the_python_sdk_and_broken_ones_are_dropped() {
    logs();
    server();
    let room = room_name("texts");
    let user = python_user(&[
        "--room",
        &room,
        "--identity",
        "user",
        "--wait-for",
        "agent",
        "--text-topic",
        "mindbot.one",
        "--text-topic",
        "mindbot.streamed",
        "--send-delay",
        "2",
        // No microphone: a typed-only user. LiveKit announces a participant
        // that publishes nothing in a batch every 3 s, so its streams may
        // arrive before we see it join (below).
        // Never finished, then over the 64 KiB limit: both dropped by the agent.
        "--abandon-stream",
        "mindbot.broken",
        "--send-text-size",
        "mindbot.huge:100000",
        // Then a long text (three chunks or more) and a short one.
        "--send-text-size",
        "mindbot.long:40000",
        "--send-text",
        "lk.chat:hello from python",
        "--stay",
        "10",
    ]);
    let (agent, mut events) = join(&room, "agent").await;

    // What the SDK sent arrives whole, the broken streams never do; the
    // user's join is seen too, before or after its streams.
    let mut got = Vec::new();
    let mut joined = false;
    while got.len() < 2 || !joined {
        let event = wait_for(&mut events, Duration::from_secs(20), |e| match e {
            RoomEvent::TextStream(s) => Some(Ok(s)),
            RoomEvent::ParticipantJoined(p) if p.identity == "user" => Some(Err(())),
            _ => None,
        })
        .await;
        match event {
            Ok(stream) => got.push(stream),
            Err(()) => joined = true,
        }
    }
    assert_eq!(got[0].topic, "mindbot.long", "{:?}", got[0].topic);
    assert_eq!(got[0].sender, "user");
    assert_eq!(got[0].text.len(), 40_000);
    assert!(got[0].text.starts_with("ünïcode-ünïcode-"), "{:?}", &got[0].text[..40]);
    assert_eq!((got[1].topic.as_str(), got[1].text.as_str()), ("lk.chat", "hello from python"));

    // Ours reach the SDK's handlers: one whole text with attributes, and a
    // streamed one written in pieces (one over a chunk) with trailer attributes.
    let attributes: HashMap<String, String> = [("lk.segment_id".to_string(), "SG_1".to_string())].into();
    let one = TextStreamOptions { topic: "mindbot.one".into(), attributes, ..Default::default() };
    agent.send_text("hello from rust ✓", one).await.unwrap();
    let streamed = TextStreamOptions { topic: "mindbot.streamed".into(), ..Default::default() };
    let mut writer = agent.stream_text(streamed).await.unwrap();
    let long = "é".repeat(CHUNK_BYTES); // two chunks' worth of two-byte characters
    writer.write("first, ").await.unwrap();
    writer.write(&long).await.unwrap();
    writer.write(" last").await.unwrap();
    writer.close([("lk.transcription_final".to_string(), "true".to_string())].into()).await.unwrap();

    let out = tokio::time::timeout(Duration::from_secs(60), user.wait_with_output()).await.unwrap().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("python report: {e}: {}", String::from_utf8_lossy(&out.stdout));
    });
    assert!(out.status.success(), "{report}");
    let sent = report["texts_sent"].as_array().unwrap();
    assert!(sent.iter().all(|s| s["error"].is_null()), "the SDK sent everything: {sent:?}");
    let texts = report["texts"].as_array().unwrap();
    let find = |topic: &str| texts.iter().find(|t| t["topic"] == topic).unwrap_or_else(|| panic!("{topic}: {texts:?}"));
    let one = find("mindbot.one");
    assert_eq!((one["from"].as_str(), one["text"].as_str()), (Some("agent"), Some("hello from rust ✓")));
    assert_eq!(one["attributes"]["lk.segment_id"], "SG_1");
    let streamed = find("mindbot.streamed");
    assert_eq!(streamed["text"].as_str().unwrap(), format!("first, {long} last"));
    assert!(streamed["chunks"].as_u64().unwrap() >= 4, "{}", streamed["chunks"]);
    assert_eq!(streamed["attributes"]["lk.transcription_final"], "true");
    assert!(streamed["error"].is_null(), "{streamed}");

    // The room goes on after the broken streams: data still flows.
    agent
        .send_data(OutgoingData { payload: b"still here".to_vec(), topic: Some("t".into()), ..Default::default() })
        .await
        .unwrap();
    agent.leave().await.unwrap();
}
