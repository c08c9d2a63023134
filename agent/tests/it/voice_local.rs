//! The default voice, end to end: `mindbot-agent run` with config.toml's
//! `[voice]` as shipped, on the local stack `scripts/local-voice.sh` starts
//! (llama.cpp's server with Qwen2.5-Coder-0.5B-Instruct, Whisper base,
//! Piper), the real LiveKit server and the Python end user, who speaks an
//! espeak-ng question and has the answer transcribed by the same local
//! Whisper. Only the gist is checked (the persona's name in the answer): a
//! real model's other words are not fixed. And the local
//! voices: one per built-in style, audibly apart, bad requests refused.

use std::process::Stdio;

use crate::e2e::*;
use serde_json::Value;
use sqlx::PgPool;

/// The local stack's address for `stage`, on the port scripts/local-voice.sh
/// uses (its `MINDBOT_LOCAL_*_PORT` variables move it, as they move the stack).
fn local(stage: &str, default_port: u16) -> String {
    let port = std::env::var(format!("MINDBOT_LOCAL_{stage}_PORT")).unwrap_or_else(|_| default_port.to_string());
    format!("http://127.0.0.1:{port}")
}

#[sqlx::test(migrations = "../migrations")]
async fn asked_its_name_out_loud_the_local_model_answers_aloud_with_the_personas_name(pool: PgPool) {
    // Loads the machine for a while: not beside another such test (see the kit's lock).
    let _machine = mindbot_tests::lock::whole_machine().await;
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    ensure("scripts/local-voice.sh", Some("start"));
    let agent_name = format!("mindbot-local-{}", uuid::Uuid::new_v4().simple());
    // Voice on with every other [voice] key as config.toml ships it (the
    // stack's addresses follow MINDBOT_LOCAL_*_PORT when those move it).
    let (stt, llm, tts) = (local("STT", 7892), local("LLM", 7891), local("TTS", 7893));
    let env = [
        ("MINDBOT_VOICE_ENABLED", "true"),
        ("MINDBOT_LOG_LEVEL", "info,mindbot_agent::voice=debug"),
        ("MINDBOT_VOICE_STT_BASE_URL", stt.as_str()),
        ("MINDBOT_VOICE_LLM_BASE_URL", llm.as_str()),
        ("MINDBOT_VOICE_TTS_DEFAULT_BASE_URL", tts.as_str()),
    ];
    let (_w, port) = worker(&pool, &agent_name, &env).await;
    let (_, _, token) = funded_call(&pool, "voice-local", &agent_name, "professor-ada").await;

    let out = python(
        "talker.py",
        // An answer is over after 4 s of quiet: on busy cores the local model
        // can pause that long between two sentences.
        &[
            "--token",
            &token,
            "--say",
            "Hello. What is your name?",
            "--stt-url",
            &stt,
            "--answer-timeout",
            "40",
            "--quiet",
            "4",
        ],
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
    // On topic: asked its name, the model answers with the persona's
    // (Professor Ada), as the user hears it through the recogniser.
    assert!(transcript.contains("ada"), "the answer says the persona's name, Ada: {transcript:?}");

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

/// How high a voice sits: zero crossings per second over the loud 40 ms
/// frames of 24 kHz speech. A `pitch` factor moves the voice's pitch and
/// formants, every frequency by that factor, and this rate with them.
fn crossings_per_second(pcm: &[i16]) -> f64 {
    let loud: Vec<&[i16]> = pcm
        .chunks_exact(960)
        .filter(|f| (f.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / 960.0).sqrt() > 0.05 * 32768.0)
        .collect();
    assert!(!loud.is_empty(), "no loud frame in {} samples", pcm.len());
    let crossings: usize = loud.iter().map(|f| f.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count()).sum();
    crossings as f64 / (loud.len() as f64 * 0.04)
}

async fn speak(client: &reqwest::Client, body: Value) -> (u16, Vec<u8>) {
    let resp = client
        .post(format!("{}/v1/audio/speech", local("TTS", 7893)))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn every_built_in_voice_style_has_its_own_local_voice_and_bad_requests_name_their_field() {
    ensure("scripts/local-voice.sh", Some("start"));
    // config.toml as shipped: each built-in persona's style maps to a voice of its own.
    let config: toml::Table = std::fs::read_to_string(root().join("config.toml")).unwrap().parse().unwrap();
    let voices = config["voice"]["tts"]["default"]["voices"].as_table().expect("voice.tts.default.voices");
    let catalog = personas::Catalog::builtin();
    let styles: std::collections::BTreeSet<&str> = catalog.all().iter().map(|p| p.voice.style.as_str()).collect();
    let mapped: std::collections::BTreeSet<&str> = styles
        .iter()
        .map(|s| voices.get(*s).and_then(|v| v.as_str()).unwrap_or_else(|| panic!("{s} unmapped")))
        .collect();
    assert_eq!(mapped.len(), styles.len(), "two styles share a voice: {voices:?}");

    // Professor Ada's voice is audibly higher than the late-night comic's.
    let tls = mindbot_transport::tls_client_config(&[]).unwrap();
    let client = reqwest::Client::builder().tls_backend_preconfigured(tls).build().unwrap();
    let line = "Hello, my name is Professor Ada. How can I help you today?";
    let mut height = Vec::new();
    for style in ["warm-mature-female", "gravelly-comedian"] {
        let voice = voices[style].as_str().unwrap();
        let (status, body) = speak(&client, serde_json::json!({"input": line, "voice": voice})).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let pcm: Vec<i16> = body.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
        assert!(pcm.len() > 24_000, "at least a second of speech for {style}");
        height.push(crossings_per_second(&pcm));
    }
    eprintln!("zero crossings per second: warm-mature-female {:.0}, gravelly-comedian {:.0}", height[0], height[1]);
    // Ada speaks with the female voice "heart" at its own pitch, the comic
    // with Piper's male "joe" lowered to 0.75: about 1.3 times apart here.
    assert!(height[0] > height[1] * 1.2, "{height:?}");

    // Bad input: 400 naming the field or value, nothing spoken.
    let (status, body) = speak(&client, serde_json::json!({"input": ""})).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("'input'"), "{}", String::from_utf8_lossy(&body));
    let (status, body) = speak(&client, serde_json::json!({"input": "hi", "voice": "joe pitch=9"})).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("pitch=9"), "{}", String::from_utf8_lossy(&body));
    let resp = client
        .post(format!("{}/v1/audio/transcriptions", local("STT", 7892)))
        .header("Content-Type", "multipart/form-data; boundary=x")
        .body("--x\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--x--\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let text = resp.text().await.unwrap();
    assert!(text.contains("'file'"), "{text}");
}
