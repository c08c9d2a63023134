//! The default voice, end to end: `mindbot-agent run` with config.toml's
//! `[voice]` as shipped, on the local stack `scripts/local-voice.sh` starts
//! (llama.cpp's server with SmolLM2-135M-Instruct, Whisper base, Piper), the
//! real LiveKit server and the Python end user, who speaks an espeak-ng
//! question and has the answer transcribed by the same local Whisper. Only
//! the gist is checked: a real model's words are not fixed.

mod e2e;

use std::process::Stdio;

use e2e::*;
use serde_json::Value;
use sqlx::PgPool;

const LOCAL_STT: &str = "http://127.0.0.1:7892";

#[sqlx::test(migrations = "../migrations")]
async fn asked_its_name_out_loud_the_local_model_answers_aloud_with_the_personas_name(pool: PgPool) {
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    ensure("scripts/local-voice.sh", Some("start"));
    let agent_name = format!("mindbot-local-{}", uuid::Uuid::new_v4().simple());
    // Voice on with every other [voice] key as config.toml ships it.
    let env = [("MINDBOT_VOICE_ENABLED", "true"), ("MINDBOT_LOG_LEVEL", "info,mindbot_agent::voice=debug")];
    let (_w, port) = worker(&pool, &agent_name, &env).await;
    let user = user_with_card(&pool, 10).await;
    let room = format!("voice-local-{}", uuid::Uuid::new_v4().simple());
    let meta = serde_json::json!({"user_id": user.to_string(), "persona": "professor-ada"});
    let token = dispatch_token(&room, &user.to_string(), &agent_name, &meta).await;

    let out = python(
        "talker.py",
        &["--token", &token, "--say", "Hello. What is your name?", "--stt-url", LOCAL_STT, "--answer-timeout", "40"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .output()
    .await
    .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("talker report: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    eprintln!("talker report: {report}");

    assert_eq!(report["greeting"]["heard"], true, "the agent greets the user aloud: {report}");
    let turn = &report["turns"][0];
    let latency = turn["latency_ms"].as_f64().expect("the agent answered the question aloud");
    let transcript = turn["transcript"].as_str().unwrap().to_lowercase();
    eprintln!("end of question to first answer audio: {latency:.0} ms; answer heard as {transcript:?}");
    assert!(turn["seconds"].as_f64().unwrap() > 0.5, "a spoken answer, not a click: {report}");
    // Professor Ada's name, as the user's recogniser heard the model's answer.
    assert!(transcript.contains("ada"), "the answer names the persona: {transcript:?}");

    // The answer came from the model (tokens counted), with no tool offered.
    let (_, metrics) = get(port, "/metrics").await;
    let tokens: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("mindbot_voice_llm_tokens_total{") && l.contains("persona=\"professor-ada\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(tokens > 0.0, "the local model's tokens are counted: {metrics}");
    assert!(sample(&metrics, "mindbot_voice_tool_calls_total{").is_none(), "no tool was called: {metrics}");
}
