//! The agent talks, end to end: `mindbot-agent run` with its voice pipeline
//! on the test speech services (`tests/speech`: espeak-ng, PocketSphinx and a
//! responder that answers from the system prompt), the real LiveKit server
//! and the Python end user (`tests/clients/talker.py`), who speaks espeak-ng
//! questions, records the answers and transcribes them with PocketSphinx.

mod e2e;

use std::process::Stdio;

use e2e::*;
use serde_json::Value;
use sqlx::PgPool;

/// The worker's voice settings for the test services. Professor Ada's
/// voice style maps to an espeak-ng voice PocketSphinx understands well.
fn voice_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("MINDBOT_VOICE_ENABLED", "true"),
        ("MINDBOT_LOG_LEVEL", "info,mindbot_agent::voice=debug"),
        ("MINDBOT_VOICE_STT_BASE_URL", "http://127.0.0.1:7890"),
        ("MINDBOT_VOICE_LLM_BASE_URL", "http://127.0.0.1:7890"),
        ("MINDBOT_VOICE_TTS_DEFAULT_BASE_URL", "http://127.0.0.1:7890"),
        ("MINDBOT_VOICE_TTS_DEFAULT_VOICES", r#"{ "warm-mature-female" = "en-us+f2" }"#),
    ]
}

async fn talk(token: &str, args: &[&str]) -> Value {
    let out = python("talker.py", &[&["--token", token], args].concat())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .await
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("talker report: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[sqlx::test(migrations = "../migrations")]
async fn the_agent_answers_as_its_persona_and_stops_when_talked_over(pool: PgPool) {
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    ensure("scripts/speech-services.sh", Some("start"));
    let agent_name = format!("mindbot-voice-{}", uuid::Uuid::new_v4().simple());
    let (_w, port) = worker(&pool, &agent_name, &voice_env()).await;
    let user = user_with_card(&pool, 10).await;
    let room = format!("voice-{}", uuid::Uuid::new_v4().simple());
    let meta = serde_json::json!({"user_id": user.to_string(), "persona": "professor-ada"});
    let token = dispatch_token(&room, &user.to_string(), &agent_name, &meta).await;

    let report = talk(
        &token,
        &[
            "--say",
            "Hello. What is your name?",
            "--say",
            "Can you help me with fractions?",
            "--barge-in",
            "Wait. Stop please. I have another question.",
        ],
    )
    .await;
    eprintln!("talker report: {report}");

    assert_eq!(report["greeting"]["heard"], true, "the agent greets the user: {report}");
    let turns = report["turns"].as_array().unwrap();
    let first = &turns[0];
    let latency = first["latency_ms"].as_f64().expect("the agent answered the question");
    let transcript = first["transcript"].as_str().unwrap();
    eprintln!("end of question to first answer audio: {latency:.0} ms; answer heard as {transcript:?}");
    // The answer names the persona its prompt gave it, in words PocketSphinx heard.
    assert!(transcript.contains("professor"), "the persona's name is in the answer: {transcript:?}");

    let barge = &report["barge_in"];
    let stopped = barge["stopped_after_ms"].as_f64().expect("the agent stopped when talked over");
    eprintln!(
        "talked over after {} s of answer: the agent went quiet {stopped:.0} ms later",
        barge["answer_seconds_before"]
    );
    assert!(barge["answer_seconds_before"].as_f64().unwrap() > 0.5, "{barge}");
    // Generous: the figure is printed; the target (300 ms) is for the benchmark.
    assert!(stopped < 1500.0, "{barge}");

    let (_, metrics) = get(port, "/metrics").await;
    let barge_ins = sample(&metrics, "mindbot_voice_barge_ins_total{persona=\"professor-ada\"}");
    assert!(barge_ins >= Some(1.0), "{metrics}");
    let spoken = sample(&metrics, "mindbot_voice_tts_characters_total{persona=\"professor-ada\",provider=\"default\"}");
    assert!(spoken > Some(50.0), "{metrics}");
    assert!(metrics.contains("mindbot_voice_stt_audio_seconds"), "{metrics}");
    assert!(metrics.contains("mindbot_voice_llm_tokens_total"), "{metrics}");
}
