//! The agent talks, end to end: `mindbot-agent run` with its voice pipeline
//! on the test speech services (`tests/speech`: espeak-ng, PocketSphinx and a
//! responder that answers from the system prompt), the real LiveKit server
//! and the Python end user (`tests/clients/talker.py`), who speaks espeak-ng
//! questions, records the answers and transcribes them with PocketSphinx.

use crate::api_support;

use crate::e2e::*;
use mindbot_tests::speech::private_speech_services;
use serde_json::Value;
use sqlx::PgPool;

/// The worker's voice settings for the test services at `base`. Professor
/// Ada's voice style maps to an espeak-ng voice PocketSphinx understands well.
fn voice_env(base: &str) -> Vec<(&'static str, String)> {
    vec![
        ("MINDBOT_VOICE_ENABLED", "true".into()),
        ("MINDBOT_LOG_LEVEL", "info,mindbot_agent::voice=debug".into()),
        ("MINDBOT_VOICE_STT_BASE_URL", base.into()),
        ("MINDBOT_VOICE_LLM_BASE_URL", base.into()),
        ("MINDBOT_VOICE_LLM_TOOLS", "true".into()),
        ("MINDBOT_VOICE_TTS_DEFAULT_BASE_URL", base.into()),
        ("MINDBOT_VOICE_TTS_DEFAULT_VOICES", r#"{ "warm-mature-female" = "en-us+f2" }"#.into()),
    ]
}

async fn voice_worker(
    pool: &PgPool,
    agent_name: &str,
    base: &str,
    extra: &[(&str, &str)],
) -> (crate::in_process::Service, u16) {
    let env = voice_env(base);
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    worker(pool, agent_name, &all).await
}

#[sqlx::test(migrations = "../migrations")]
async fn the_agent_answers_as_its_persona_and_stops_when_talked_over(pool: PgPool) {
    // Its Python user speaks and listens in real time: alone with the
    // machine's other real-time tests (see mindbot_tests::lock).
    let _machine = mindbot_tests::lock::whole_machine().await;
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    ensure("scripts/speech-services.sh", Some("start"));
    let agent_name = format!("mindbot-voice-{}", uuid::Uuid::new_v4().simple());
    let (_w, port) = voice_worker(&pool, &agent_name, "http://127.0.0.1:7890", &[]).await;
    let (_, _, token) = funded_call(&pool, "voice", &agent_name, "professor-ada").await;

    let report = talk(
        &token,
        &[
            "--voice",
            "en-us+f2",
            "--say",
            "Hello. What is your name?",
            "--say",
            // Of the phrasings tried, the one PocketSphinx hears as "balance"
            // most reliably under noise, gain and a clipped end (69 of 70;
            // "What is my balance?" 19 of 30, once heard as "bad and" in CI).
            "Please check my balance.",
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

    // The balance question reached the model, which called get_balance (the
    // metric below) and spoke the meter's answer. PocketSphinx hears that
    // short answer too poorly to check its words, so they are only printed.
    assert!(turns[1]["latency_ms"].as_f64().is_some(), "the balance was answered: {report}");
    eprintln!("balance answer heard as {:?}", turns[1]["transcript"]);

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
    assert_eq!(sample(&metrics, "mindbot_voice_tool_calls_total{tool=\"get_balance\"}"), Some(1.0), "{metrics}");
}

#[sqlx::test(migrations = "../migrations")]
async fn provider_failures_are_retried_then_apologised_for_and_the_goodbye_precedes_the_hang_up(pool: PgPool) {
    // Its Python user speaks and listens in real time: alone with the
    // machine's other real-time tests (see mindbot_tests::lock).
    let _machine = mindbot_tests::lock::whole_machine().await;
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    ensure("scripts/deps.sh", None);
    let (_speech, base) = private_speech_services(None).await;
    let agent_name = format!("mindbot-voice-{}", uuid::Uuid::new_v4().simple());
    let (_w, port) = voice_worker(&pool, &agent_name, &base, &[]).await;
    // One minute of card at Professor Ada's 1.0x: a 60 s conversation.
    let user = user_with_card(&pool, 1).await;
    let room = format!("voice-{}", uuid::Uuid::new_v4().simple());
    let meta = serde_json::json!({"user_id": user.to_string(), "persona": "professor-ada"});
    let token = dispatch_token(&room, &user.to_string(), &agent_name, &meta).await;

    let control = format!("{base}/control");
    let report = talk(
        &token,
        &[
            "--control",
            &control,
            // The model fails twice (the call and its retry): the agent apologises.
            "--fail-before",
            "1:llm",
            "--say",
            "Hello. What is your name?",
            // Text to speech fails twice: the agent stays silent.
            "--fail-before",
            "2:tts",
            "--say",
            "Can you help me with fractions?",
            "--answer-timeout",
            "8",
            "--stay",
            "80",
        ],
    )
    .await;
    eprintln!("talker report: {report}");
    let turns = report["turns"].as_array().unwrap();
    assert!(turns[0]["latency_ms"].as_f64().is_some(), "the agent said it had a problem: {report}");
    eprintln!("the apology heard as {:?}", turns[0]["transcript"]);
    assert!(turns[1]["latency_ms"].is_null(), "a failing text to speech leaves the agent silent: {report}");
    let end = &report["end"];
    assert_eq!(end["disconnected"], true, "hung up at zero balance: {report}");
    let last = end["last_sound_before_s"].as_f64().expect("the agent spoke");
    eprintln!("last agent sound {last} s before the hang-up; heard as {:?}", end["transcript"]);
    assert!(last < 6.0, "the goodbye comes in the last seconds: {report}");

    let reason: String = sqlx::query_scalar("SELECT end_reason FROM voice_sessions WHERE room_name = $1")
        .bind(&room)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(reason, "balance_exhausted");
    let (_, metrics) = get(port, "/metrics").await;
    let errors = |stage: &str, provider: &str| {
        sample(&metrics, &format!("mindbot_voice_errors_total{{stage=\"{stage}\",provider=\"{provider}\"}}"))
    };
    assert_eq!(errors("llm", "local"), Some(2.0), "{metrics}");
    assert_eq!(errors("tts", "default"), Some(2.0), "{metrics}");
}

/// Expected cost text of one usage row at the prices `usage_is_stored_...` sets:
/// STT 100 micro-units a second, prompt 150 and completion 600 per 1000
/// tokens, TTS 15000 per 1000 characters (nano-units, shown with six decimals).
fn cost_text(nanos: i64) -> String {
    let micros = (nanos + 500) / 1000;
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

#[sqlx::test(migrations = "../migrations")]
async fn a_spoken_turn_is_stored_as_provider_usage_and_shown_with_the_billed_time(pool: PgPool) {
    // Its Python user speaks and listens in real time: alone with the
    // machine's other real-time tests (see mindbot_tests::lock).
    let _machine = mindbot_tests::lock::whole_machine().await;
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    // A speech service of our own: what it served is this session's alone.
    let (_speech, base) = private_speech_services(None).await;
    let agent_name = format!("mindbot-voice-{}", uuid::Uuid::new_v4().simple());
    let prices = [
        ("MINDBOT_VOICE_PRICES_LOCAL_STT_MICROS_PER_SECOND", "100"),
        ("MINDBOT_VOICE_PRICES_LOCAL_LLM_PROMPT_MICROS_PER_1K_TOKENS", "150"),
        ("MINDBOT_VOICE_PRICES_LOCAL_LLM_COMPLETION_MICROS_PER_1K_TOKENS", "600"),
        ("MINDBOT_VOICE_PRICES_DEFAULT_TTS_MICROS_PER_1K_CHARACTERS", "15000"),
    ];
    let mut extra: Vec<(&str, &str)> = api_support::api_env();
    extra.push(("MINDBOT_WORKER_USER_GRACE_SECONDS", "2"));
    extra.extend_from_slice(&prices);
    let (_w, port) = voice_worker(&pool, &agent_name, &base, &extra).await;
    let user = user_with_card(&pool, 10).await;
    // The card was bought for 9.99 (as the Stripe webhook records it): its
    // charged time is revenue in the report.
    sqlx::query(
        "INSERT INTO payment_history (user_id, stripe_payment_intent_id, amount_cents, currency, status, time_card_id) \
         SELECT $1, 'pi_usage_test', 999, 'usd', 'succeeded', id FROM time_cards WHERE user_id = $1",
    )
    .bind(user)
    .execute(&pool)
    .await
    .unwrap();
    let room = format!("voice-{}", uuid::Uuid::new_v4().simple());
    let meta = serde_json::json!({"user_id": user.to_string(), "persona": "professor-ada"});
    let token = dispatch_token(&room, &user.to_string(), &agent_name, &meta).await;

    let report = talk(&token, &["--voice", "en-us+f2", "--say", "Hello. What is your name?"]).await;
    eprintln!("talker report: {report}");
    assert!(report["turns"][0]["latency_ms"].as_f64().is_some(), "the agent answered: {report}");

    // The user has left; the session ends after the grace and writes its usage.
    let served = || async {
        let body = reqwest_free_get(&base, "/usage").await;
        serde_json::from_str::<Value>(&body).unwrap()
    };
    let stored = |stage: &'static str| {
        let pool = pool.clone();
        let room = room.clone();
        async move {
            sqlx::query_as::<_, (String, i64, i64, i64, i64)>(
                "SELECT su.provider, su.stt_audio_ms, su.llm_prompt_tokens, su.llm_completion_tokens, su.tts_characters \
                 FROM session_usage su JOIN voice_sessions vs ON vs.id = su.voice_session_id \
                 WHERE vs.room_name = $1 AND su.stage = $2",
            )
            .bind(room)
            .bind(stage)
            .fetch_optional(&pool)
            .await
            .unwrap()
        }
    };
    let mut settled = false;
    for _ in 0..60 {
        let ended: Option<String> =
            sqlx::query_scalar("SELECT status FROM voice_sessions WHERE room_name = $1 AND end_time IS NOT NULL")
                .bind(&room)
                .fetch_optional(&pool)
                .await
                .unwrap();
        let tts = stored("tts").await.map(|r| r.4);
        if ended.is_some() && tts.is_some() && tts == served().await["tts_characters"].as_i64() {
            settled = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let served = served().await;
    eprintln!("the speech service served {served}");
    assert!(settled, "the session ended and stored its usage: stored tts {:?}, served {served}", stored("tts").await);

    let (stt_provider, stt_ms, ..) = stored("stt").await.expect("a speech to text row");
    let (llm_provider, _, prompt, completion, _) = stored("llm").await.expect("a language model row");
    let (tts_provider, .., characters) = stored("tts").await.expect("a text to speech row");
    assert_eq!((stt_provider.as_str(), llm_provider.as_str(), tts_provider.as_str()), ("local", "local", "default"));
    assert!(stt_ms > 0, "audio seconds were sent to speech to text");
    // The agent counts 48 kHz samples, the service the 16 kHz WAV it got:
    // the same audio, up to a millisecond of rounding per turn.
    let heard = served["stt_audio_ms"].as_i64().unwrap();
    assert!((stt_ms - heard).abs() <= 3, "stored {stt_ms} ms, the service transcribed {heard} ms");
    assert_eq!(prompt, served["llm_prompt_tokens"].as_i64().unwrap(), "prompt tokens as the service reported");
    assert_eq!(completion, served["llm_completion_tokens"].as_i64().unwrap(), "completion tokens as reported");
    assert!(prompt > 0 && completion > 0);
    assert_eq!(characters, served["tts_characters"].as_i64().unwrap(), "characters as spoken");
    // The greeting alone is longer than this.
    assert!(characters > 40, "{characters}");

    let (id, metered_ms, charged_ms): (uuid::Uuid, i64, i64) =
        sqlx::query_as("SELECT id, metered_ms, charged_ms FROM voice_sessions WHERE room_name = $1")
            .bind(&room)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(metered_ms > 0 && charged_ms > 0);

    // The user sees it with the session.
    let api = api_support::ApiServer::at(port);
    let page = api.get("/v1/me/sessions", Some(&api_support::token(user))).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let page = page.json();
    let session = &page["sessions"][0];
    assert_eq!(session["id"], id.to_string());
    assert_eq!(session["duration_seconds"], metered_ms / 1000);
    let usage = session["usage"].as_array().expect("usage in the session");
    assert_eq!(usage.len(), 3, "{session}");
    assert_eq!(usage[0]["stage"], "llm");
    assert_eq!(
        (usage[0]["llm_prompt_tokens"].as_i64(), usage[0]["llm_completion_tokens"].as_i64()),
        (Some(prompt), Some(completion))
    );
    assert_eq!((usage[1]["stage"].as_str(), usage[1]["stt_audio_ms"].as_i64()), (Some("stt"), Some(stt_ms)));
    assert_eq!((usage[2]["stage"].as_str(), usage[2]["tts_characters"].as_i64()), (Some("tts"), Some(characters)));

    // The operator's report: billed time and revenue against usage and its cost.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mindbot-agent"))
            .args(args)
            .env("DATABASE_URL", url_for(&pool))
            .env("MINDBOT_LOG_LEVEL", "warn")
            .envs(prices)
            .output()
            .unwrap()
    };
    let out = cli(&["usage", "--since", &today]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{text}");
    let revenue = cost_text(charged_ms * 999 * 10_000_000 / 600_000);
    let (stt_cost, llm_cost, tts_cost) = (stt_ms * 100, prompt * 150 + completion * 600, characters * 15_000);
    let total = cost_text(stt_cost + llm_cost + tts_cost);
    let seconds = |ms: i64| format!("{}.{:03}", ms / 1000, ms % 1000);
    assert!(
        text.contains(&format!("session {id} professor-ada started "))
            && text.contains(&format!(
                "billed_s {} charged_card_s {} revenue {revenue} provider_cost {total}",
                metered_ms / 1000,
                seconds(charged_ms)
            )),
        "the session's line: {text}"
    );
    assert!(text.contains(&format!("  stt local audio_s {} cost {}", seconds(stt_ms), cost_text(stt_cost))), "{text}");
    assert!(
        text.contains(&format!(
            "  llm local prompt_tokens {prompt} completion_tokens {completion} cost {}",
            cost_text(llm_cost)
        )),
        "{text}"
    );
    assert!(text.contains(&format!("  tts default characters {characters} cost {}", cost_text(tts_cost))), "{text}");
    let persona = text.lines().find(|l| l.starts_with("professor-ada ")).expect("a persona line");
    let cols: Vec<&str> = persona.split_whitespace().collect();
    assert_eq!(
        cols,
        [
            "professor-ada".to_string(),
            "1".into(),
            (metered_ms / 1000).to_string(),
            seconds(charged_ms),
            revenue.clone(),
            total.clone(),
            seconds(stt_ms),
            prompt.to_string(),
            completion.to_string(),
            characters.to_string()
        ]
    );

    // A date the report cannot read: a clear error naming --since, nothing printed.
    let bad = cli(&["usage", "--since", "last tuesday"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--since") && err.contains("last tuesday") && err.contains("YYYY-MM-DD"), "{err}");
    assert!(bad.stdout.is_empty());
}

/// A plain HTTP GET of `path` at `base` (http://host:port); the body.
async fn reqwest_free_get(base: &str, path: &str) -> String {
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    let (code, body) = get(port, path).await;
    assert_eq!(code, 200, "{body}");
    body
}

#[sqlx::test(migrations = "../migrations")]
async fn under_a_steady_hum_turns_are_heard_a_trailing_and_waits_and_a_cough_does_not_stop_the_answer(pool: PgPool) {
    ensure("scripts/livekit-server.sh", Some("start"));
    ensure("scripts/python-env.sh", None);
    ensure("scripts/deps.sh", None);
    // Alone on the machine: its user is a Python process that must send
    // audio in real time, and when starved of CPU (12 users of another test
    // beside it) it sent frames with gaps of silence under the hum, which
    // sank the noise floor and let the hum pass for speech.
    let _machine = mindbot_tests::lock::whole_machine().await;
    // Speech services of its own: the shared ones' recogniser serves one
    // request at a time for every test running.
    let (_speech, base) = private_speech_services(Some(7971)).await;
    let agent_name = format!("mindbot-voice-{}", uuid::Uuid::new_v4().simple());
    // The private recogniser serves one request at a time, and on a loaded
    // machine (CI runs this beside other tests) a turn once took it over
    // 10 s: the default timeout's retry then queued behind the first try.
    let slow_stt = [("MINDBOT_VOICE_STT_TIMEOUT_MS", "20000")];
    let (_w, port) = voice_worker(&pool, &agent_name, &base, &slow_stt).await;
    let (_, _, token) = funded_call(&pool, "voice", &agent_name, "professor-ada").await;

    // A hum and hiss at -38 dBFS under everything the user sends, louder
    // than the -42 dBFS speech threshold: a plain level detector would take
    // it for one endless turn.
    let report = talk(
        &token,
        &[
            "--voice",
            "en-us+f2",
            "--noise",
            "-38",
            "--noise-alone",
            "6",
            "--answer-timeout",
            "45",
            // 0.7 s of quiet after "and": more than the 0.6 s that ends a turn
            // on quiet alone, less than the 1.5 s a trailing word waits for.
            "--say",
            "I would like to ask you something and || what is your name?",
            "--say",
            "Hello. What is your name?",
            "--cough",
            "2:1.5",
        ],
    )
    .await;
    eprintln!("talker report: {report}");

    assert_eq!(report["greeting"]["heard"], true, "{report}");
    let alone = &report["noise_alone"];
    assert_eq!(alone["agent_sound_seconds"].as_f64(), Some(0.0), "the noise alone gets no answer: {report}");
    let turns = report["turns"].as_array().unwrap();
    for turn in turns {
        assert!(turn["latency_ms"].as_f64().is_some(), "each question over the noise is answered: {report}");
        // The user's own recogniser (PocketSphinx on espeak-ng, under the
        // hum) hears the answer's words; the persona's name it has heard as
        // "princess" too, so the name is checked in the agent's transcript.
        let transcript = turn["transcript"].as_str().unwrap();
        assert!(transcript.contains("my name is"), "the answer is heard: {transcript:?}");
    }
    let agent_said: Vec<&str> = report["transcripts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["from"].as_str().is_some_and(|f| f.starts_with("agent-")))
        .filter_map(|t| t["text"].as_str())
        .collect();
    let answers = agent_said.iter().filter(|t| t.contains("My name is Professor Ada")).count();
    assert_eq!(answers, 2, "both answers name the persona: {agent_said:?}");
    // The cough went over the answer, which played on to its end: as long as
    // the same answer heard without it (the cough's pause only adds).
    assert!(turns[1]["cough_at_s"].as_f64().is_some(), "{report}");
    let (plain, coughed) = (turns[0]["seconds"].as_f64().unwrap(), turns[1]["seconds"].as_f64().unwrap());
    eprintln!("the answer lasted {plain} s; with a cough over it {coughed} s");
    assert!(coughed >= plain - 0.3, "the coughed-over answer was cut short: {report}");

    let (_, metrics) = get(port, "/metrics").await;
    // Two turns: the noise started none, the pause after "and" did not split
    // the first question, and the cough was not a turn.
    assert_eq!(sample(&metrics, "mindbot_voice_turns_total{persona=\"professor-ada\"}"), Some(2.0), "{metrics}");
    assert_eq!(
        sample(&metrics, "mindbot_voice_false_interruptions_total{persona=\"professor-ada\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(sample(&metrics, "mindbot_voice_barge_ins_total{persona=\"professor-ada\"}"), None, "{metrics}");
}
