//! The agent speaks LiveKit's agent conventions, end to end: `mindbot-agent
//! run` with its voice on the test speech services, the real LiveKit server,
//! and LiveKit's Python SDK as the user (`tests/clients/talker.py`), reading
//! what LiveKit's frontends read: the agent's `lk.agent.state` attribute,
//! transcriptions on `lk.transcription`, and typed turns on `lk.chat`.

use crate::api_support::request;
use crate::e2e::*;
use serde_json::Value;
use sqlx::PgPool;

fn voice_env() -> Vec<(&'static str, &'static str)> {
    let base = "http://127.0.0.1:7890";
    vec![
        ("MINDBOT_VOICE_ENABLED", "true"),
        ("MINDBOT_VOICE_STT_BASE_URL", base),
        ("MINDBOT_VOICE_LLM_BASE_URL", base),
        ("MINDBOT_VOICE_TTS_DEFAULT_BASE_URL", base),
        ("MINDBOT_VOICE_TTS_DEFAULT_VOICES", r#"{ "warm-mature-female" = "en-us+f2" }"#),
    ]
}

/// Whether `want` appears in `seen` in order (other states may come between).
fn in_order(seen: &[&str], want: &[&str]) -> bool {
    let mut it = seen.iter();
    want.iter().all(|w| it.any(|s| s == w))
}

#[sqlx::test(migrations = "../migrations")]
async fn a_spoken_and_a_typed_turn_show_the_agent_state_and_both_sides_transcripts(pool: PgPool) {
    // Its Python user speaks and listens in real time: alone with the
    // machine's other real-time tests (see mindbot_tests::lock).
    let _machine = mindbot_tests::lock::whole_machine().await;
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    ensure("scripts/speech-services.sh", Some("start"));
    let agent_name = format!("mindbot-conv-{}", uuid::Uuid::new_v4().simple());
    let (_w, _port) = worker(&pool, &agent_name, &voice_env()).await;
    let (user, _, token) = funded_call(&pool, "conv", &agent_name, "professor-ada").await;

    let report = talk(
        &token,
        &[
            "--voice",
            "en-us+f2",
            "--say",
            "Hello. What is your name?",
            // An unfinished and an oversized lk.chat stream: dropped, and the session goes on.
            "--junk-chat",
            "--type",
            "What is your name?",
            "--stay",
            "3",
        ],
    )
    .await;
    eprintln!("talker report: {report}");

    // The state, as the user's SDK saw the agent's attribute change.
    let states: Vec<&str> =
        report["agent_states"].as_array().unwrap().iter().map(|s| s["state"].as_str().unwrap()).collect();
    assert_eq!(states.first(), Some(&"initializing"), "{states:?}");
    assert!(
        in_order(&states, &["initializing", "listening", "speaking", "listening", "thinking", "speaking", "listening"]),
        "greeting, then a spoken turn: {states:?}"
    );
    // Three answers (greeting, spoken and typed turn), and nothing for the junk streams.
    assert_eq!(states.iter().filter(|s| **s == "speaking").count(), 3, "{states:?}");
    assert_eq!(states.iter().filter(|s| **s == "thinking").count(), 2, "{states:?}");

    let transcripts = report["transcripts"].as_array().unwrap();
    let me = user.to_string();
    let my_track = report["my_track"].as_str().unwrap();
    // The user's final transcript of the spoken turn, as theirs, for their track.
    let mine: Vec<&Value> = transcripts.iter().filter(|t| t["from"] == me.as_str()).collect();
    assert_eq!(mine.len(), 1, "one spoken turn, one user transcript (typed turns are not echoed): {transcripts:?}");
    // What the user is shown is what the recogniser heard of their audio, word
    // for word; how well PocketSphinx hears espeak-ng on a loaded machine is
    // not the agent's doing (CI once heard "what's easy on the game"), so of
    // the words only one of the question's is asked for.
    let heard = mine[0]["text"].as_str().unwrap();
    let recognised = request(7890, "GET", "/inspect", &[], None).await.json();
    assert!(
        recognised["stt"].as_array().unwrap().iter().any(|t| t == heard),
        "the transcript is the recogniser's text: {heard:?} not in {recognised}"
    );
    let words = ["hello", "what", "what's", "your", "name"];
    assert!(
        heard.to_lowercase().split_whitespace().any(|w| words.contains(&w)),
        "PocketSphinx heard the question: {heard:?}"
    );
    assert_eq!(mine[0]["attributes"]["lk.transcribed_track_id"], my_track);
    assert_eq!(mine[0]["attributes"]["lk.transcription_final"], "true");
    assert!(mine[0]["attributes"]["lk.segment_id"].as_str().unwrap().starts_with("SG_"));

    // The agent's words: greeting, the spoken turn's answer, the typed turn's
    // answer, each streamed (a chunk per sentence) and ended final.
    let agent: Vec<&Value> = transcripts.iter().filter(|t| t["from"] != me.as_str()).collect();
    assert_eq!(agent.len(), 3, "{agent:?}");
    assert!(agent[0]["text"].as_str().unwrap().starts_with("Hello, I am Professor Ada."), "{}", agent[0]);
    for answer in &agent[1..3] {
        let text = answer["text"].as_str().unwrap();
        assert!(text.starts_with("My name is Professor Ada.") && text.ends_with("my name is Professor Ada."), "{text}");
        assert!(answer["chunks"].as_u64().unwrap() > 1, "streamed as spoken: {answer}");
        assert_eq!(answer["attributes"]["lk.transcription_final"], "true", "{answer}");
        assert!(answer["attributes"]["lk.transcribed_track_id"].as_str().unwrap().starts_with("TR_"), "{answer}");
        assert!(answer["error"].is_null(), "{answer}");
    }
    assert_ne!(agent[1]["attributes"]["lk.segment_id"], agent[2]["attributes"]["lk.segment_id"]);

    // The typed question was answered aloud on the agent's track.
    let typed = &report["typed"][0];
    assert!(typed["latency_ms"].as_f64().is_some(), "the typed turn was spoken: {report}");
    assert!(typed["seconds"].as_f64().unwrap() > 3.0, "{typed}");
    let words = typed["transcript"].as_str().unwrap();
    eprintln!("typed turn's answer heard as {words:?}");
    assert!(words.contains("professor"), "the answer names the persona: {words:?}");
}
