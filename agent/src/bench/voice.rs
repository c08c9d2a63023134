//! `bench voice`: how long the user waits for an answer, stage by stage.
//! Two participants in one room on the LiveKit server: the agent runs the
//! voice pipeline (the configured providers, the default persona, no
//! meter), the user speaks the voice tests' questions synthesised by the
//! configured text to speech (espeak-ng's `en-us+f2` with the test
//! services). The clock starts when the user's last sample has gone out;
//! the pipeline's own stages (`voice::Stage`) and the first loud frame the
//! user receives are timed from there. Each next question talks over the
//! answer before it (the agent stops and listens), so a turn does not wait
//! for a long answer.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use metering::meter::Snapshot;
use mindbot_transport::room::{self, ConnectOptions, RoomEvent};
use tokio::sync::watch;

use crate::config::Config;
use crate::voice::{Stage, VoiceService};

/// A received 20 ms frame louder than this is the agent talking.
const LOUD_DBFS: f64 = -45.0;
/// The questions of `agent/tests/it/voice.rs`, in turn.
const QUESTIONS: [&str; 3] = ["Hello. What is your name?", "What is my balance?", "Can you help me with fractions?"];
/// The user's voice (an espeak-ng voice the test recogniser hears well).
const USER_VOICE: &str = "en-us+f2";
/// The rows of the report: the pipeline's stages, then the user hearing the answer.
const ROWS: [(Option<Stage>, &str); 7] = [
    (Some(Stage::SpeechEnd), "agent received the last speech"),
    (Some(Stage::TurnEnd), "end of turn decided"),
    (Some(Stage::Transcript), "transcript in"),
    (Some(Stage::FirstToken), "first LLM token"),
    (Some(Stage::FirstClause), "first clause to text to speech"),
    (Some(Stage::FirstAudio), "first audio queued on the track"),
    (None, "first audio heard by the user"),
];

pub async fn voice(config: &Config, turns: usize) -> Result<ExitCode> {
    anyhow::ensure!(turns > 0, "--turns must be positive");
    let mut vc = config.voice.clone();
    vc.enabled = true;
    vc.greet = false;
    let svc = VoiceService::from_config(&vc)?.context("voice service")?;
    let catalog = personas::Catalog::builtin();
    let persona = catalog.get(&config.personas.default).context("the default persona is not in the catalog")?;
    svc.record_stages();
    let mut questions = Vec::new();
    for q in QUESTIONS {
        let pcm = trim(svc.synthesize(USER_VOICE, q).await.context("synthesising the user's question")?);
        anyhow::ensure!(!pcm.is_empty(), "the text to speech provider returned no audio");
        questions.push(pcm);
    }
    let load_before = load_average();

    let name = format!("bench-voice-{}", std::process::id());
    let url = &config.livekit.url;
    let (agent, mut agent_events) =
        room::connect(url, &super::room_token(config, &name, "agent")?, ConnectOptions::default())
            .await
            .context("agent joining")?;
    let (user, mut user_events) =
        room::connect(url, &super::room_token(config, &name, "user")?, ConnectOptions::default())
            .await
            .context("user joining")?;
    let (_balance_tx, balance) = watch::channel(Snapshot::default());
    let voice = svc.start(&agent, persona, balance, Default::default()).await.context("starting the voice")?;
    let mouth = user.publish_audio("microphone").await.context("publishing the user's audio")?;

    // The agent hears the user; the user records when the agent was loud.
    let loud_at: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let stream = wait_audio(&mut agent_events, "user").await?;
    voice.hear(stream);
    let mut ear = wait_audio(&mut user_events, "agent").await?;
    let heard = loud_at.clone();
    let listener = tokio::spawn(async move {
        while let Some(frame) = ear.recv().await {
            if loud(&frame.samples) {
                heard.lock().unwrap_or_else(|e| e.into_inner()).push(Instant::now());
            }
        }
    });

    // Per row, each turn's time from the end of the user's speech.
    let mut rows: Vec<Vec<Duration>> = vec![Vec::new(); ROWS.len()];
    for turn in 0..turns {
        svc.take_stages(); // what the previous, interrupted answer left
        mouth.push(&questions[turn % questions.len()]).await.context("speaking")?;
        while !mouth.queued().is_zero() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ended = Instant::now();
        let first = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(t) = loud_at.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|t| **t > ended) {
                    return *t;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .context("no answer within 30 s")?;
        let marks = svc.take_stages();
        let mut line = Vec::new();
        for (i, (stage, name)) in ROWS.iter().enumerate() {
            let at = match stage {
                Some(stage) => marks.iter().find(|(s, _)| s == stage).map(|(_, t)| t.into_std()),
                None => Some(first),
            };
            if let Some(at) = at {
                // The agent may hear the end of speech a frame before the user's queue
                // reports it empty: that counts as zero.
                let after = at.saturating_duration_since(ended);
                rows[i].push(after);
                line.push(format!("{name} {}", after.as_millis()));
            }
        }
        println!(
            "turn {} ({:?}): ms after the user's speech ended: {}",
            turn + 1,
            QUESTIONS[turn % 3],
            line.join(", ")
        );
        // The next question talks over the rest of the answer (the agent
        // stops and listens), so turns need not wait for long answers.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    listener.abort();
    drop(voice);
    let _ = user.leave().await;
    let _ = agent.leave().await;

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "bench voice: {turns} turns, turn detection {:?}; load average {} before, {} after",
        config.voice.turn_detection,
        load_before,
        load_average()
    );
    println!("{:<34} {:>8} {:>8}   (ms after the end of the user's speech)", "stage", "p50", "p95");
    for ((_, name), times) in ROWS.iter().zip(rows.iter_mut()) {
        times.sort();
        println!("{name:<34} {:>8.0} {:>8.0}", ms(pick(times, 0.50)), ms(pick(times, 0.95)));
    }
    let heard = &rows[ROWS.len() - 1];
    println!(
        "bench voice: end of user speech to first agent audio: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        ms(pick(heard, 0.50)),
        ms(pick(heard, 0.95)),
        ms(*heard.last().unwrap_or(&Duration::ZERO)),
    );
    Ok(ExitCode::SUCCESS)
}

/// The machine's 1, 5 and 15 minute load averages, as `/proc/loadavg` says them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn loud(frame: &[i16]) -> bool {
    let energy: f64 = frame.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (energy / frame.len().max(1) as f64).sqrt() / 32768.0;
    20.0 * rms.max(1e-9).log10() > LOUD_DBFS
}

/// Without the quiet before and after the words, so timings are the speech's own.
fn trim(pcm: Vec<i16>) -> Vec<i16> {
    let frames: Vec<&[i16]> = pcm.chunks(960).collect();
    let first = frames.iter().position(|f| loud(f)).unwrap_or(0);
    let last = frames.iter().rposition(|f| loud(f)).map_or(frames.len(), |i| i + 1);
    frames[first..last].concat()
}

fn pick(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn wait_audio(events: &mut room::RoomEvents, from: &str) -> Result<room::AudioStream> {
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(e) = events.recv().await {
            if let RoomEvent::AudioTrackSubscribed { participant, stream, .. } = e {
                if participant == from {
                    return Some(stream);
                }
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .with_context(|| format!("{from}'s audio never arrived"))
}
