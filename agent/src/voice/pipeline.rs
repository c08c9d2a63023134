//! One session's conversation loop: the user's frames go through voice
//! activity detection; the end of a turn is decided in `turn.rs` (often
//! from a transcript taken at the first pause, which then is the turn's);
//! a finished turn becomes speech to text, the model's streamed answer
//! (with tools) and text to speech, clause by clause, on the agent's
//! track. The user talking over the agent pauses it at once: a short sound
//! lets it play on, longer speech stops it (reply aborted, queued audio
//! dropped). Greeting, spoken warnings and the goodbye go through the same
//! speaker.
//!
//! Each reply runs as one task owned by the loop, so aborting it stops the
//! model, the synthesis and the playback together. A typed turn (`Typed`)
//! skips speech to text and interrupts the agent like speech does. What the
//! pipeline does is reported to an [`Observer`] (state, transcripts, spoken
//! text) for the session to show the user.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metering::meter::Snapshot;
use mindbot_transport::room::{AudioFrame, AudioSource, AudioStream, FrameOrigin, FRAME_DURATION};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, warn};

use super::llm::{Delta, Sentences};
use super::observe::{AgentState, Observer, VoiceEvent};
use super::provider::ProviderError;
use super::turn::{self, Due, Ending, Judgement};
use super::vad::{Vad, VadEvent};
use super::{tools, Stage, VoiceService};
use crate::usage::SessionUsage;

/// What the session tells the pipeline.
#[derive(Debug)]
pub enum Input {
    /// The user's audio track.
    Hear(AudioStream),
    /// The session started: say hello.
    Greet,
    /// A balance warning: this much live time is left.
    Warning(Duration),
    /// A typed user turn (LiveKit's `lk.chat`).
    Typed(String),
}

/// The persona as the pipeline uses it.
pub struct Persona {
    pub slug: String,
    pub name: String,
    pub tts: String,
    pub style: String,
    pub system: String,
    pub tools: Vec<Value>,
}

/// Model tool-call rounds allowed in one answer.
const MAX_TOOL_ROUNDS: usize = 3;
const PROBLEM: &str = "Sorry, I had a problem just now. Could you say that again?";
const GOODBYE: &str = "Your time is up. Thank you for talking with me. Goodbye!";

enum Job {
    /// Answer a user turn ended at `ended`.
    Answer { heard: Heard, ended: Instant },
    /// Say a fixed line.
    Say(String),
    /// Answer a typed user turn.
    Text(String),
}

/// A finished turn's words: audio still to transcribe, the transcript taken
/// at its last pause, or that transcription still under way.
enum Heard {
    Audio(Vec<i16>),
    Text(String),
    Pending(Probe),
}

/// Speech to text of a turn before it has ended; dropping it aborts it.
struct Probe(JoinHandle<Result<String, ProviderError>>);

impl Drop for Probe {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn probe(shared: &Arc<Shared>, pcm: Vec<i16>) -> Probe {
    let sh = shared.clone();
    Probe(tokio::spawn(async move {
        let svc = &sh.svc;
        svc.stt.transcribe(&svc.client, &pcm, &sh.persona.slug, &sh.usage).await
    }))
}

async fn wait_probe(probe: &mut Option<Probe>) -> Result<String, String> {
    match probe {
        Some(p) => match (&mut p.0).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        None => std::future::pending().await,
    }
}

/// What a reply task shares.
struct Shared {
    svc: Arc<VoiceService>,
    source: AudioSource,
    persona: Arc<Persona>,
    balance: watch::Receiver<Snapshot>,
    /// The session's provider usage (the session stores it).
    usage: Arc<SessionUsage>,
    observer: Observer,
    /// Numbers each reply's speech (a transcription segment).
    segments: AtomicU64,
    /// Turns to true once the session's warm-up request (`voice.llm.warm_up`)
    /// is over, or closes with it; answers wait for it, so the first one
    /// finds the prompt cached instead of reading it beside the warm-up.
    warmed: watch::Receiver<bool>,
}

/// The session's warm-up request; dropping it aborts it.
struct WarmUp(JoinHandle<()>);

impl Drop for WarmUp {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends the persona's prompt once (one token asked for), so the model's
/// server has read it by the time the user's first turn is transcribed.
fn warm_up(
    svc: &Arc<VoiceService>,
    persona: &Arc<Persona>,
    usage: &Arc<SessionUsage>,
) -> (Option<WarmUp>, watch::Receiver<bool>) {
    let (done, warmed) = watch::channel(!svc.llm.warm_up);
    if !svc.llm.warm_up {
        return (None, warmed);
    }
    let (svc, persona, usage) = (svc.clone(), persona.clone(), usage.clone());
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let system = [json!({"role": "system", "content": persona.system})];
        match svc.llm.warm(&svc.client, &system, &persona.tools, &persona.slug, &usage).await {
            Ok(()) => debug!(ms = started.elapsed().as_millis() as u64, "the model has read the prompt"),
            Err(e) => warn!(error = %e, "warming the model up failed"),
        }
        let _ = done.send(true);
    });
    (Some(WarmUp(task)), warmed)
}

pub(super) async fn run(
    svc: Arc<VoiceService>,
    source: AudioSource,
    persona: Arc<Persona>,
    mut balance: watch::Receiver<Snapshot>,
    mut inputs: mpsc::Receiver<Input>,
    observer: Observer,
    usage: Arc<SessionUsage>,
) {
    let (_warm_up, warmed) = warm_up(&svc, &persona, &usage);
    let shared = Arc::new(Shared {
        svc: svc.clone(),
        source: source.clone(),
        persona: persona.clone(),
        balance: balance.clone(),
        usage,
        observer: observer.clone(),
        segments: AtomicU64::new(0),
        warmed,
    });
    observer.state(AgentState::Listening);
    // A finished reply's audio may still be playing: back to listening once
    // it has (checked at a deadline, which the user's frames cannot put off).
    let (mut draining, mut drain_at) = (false, Instant::now());
    let mut vad = Vad::new(svc.vad);
    let mut stream: Option<AudioStream> = None;
    let mut history: Vec<Value> = Vec::new();
    let mut reply: Option<Reply> = None;
    let mut queue: VecDeque<Job> = VecDeque::new();
    let mut goodbye_at: Option<Instant> = None;
    let mut said_goodbye = false;
    let mut meter_open = true;
    // The end of a turn is timed from the last speech frame, not counted in
    // frames: a sender in silence sends few packets or none (DTX).
    let mut last_speech = Instant::now();
    // What is known of the turn's words, and their transcription under way.
    let mut judged = Judgement::None;
    let mut probing: Option<Probe> = None;
    // The agent is paused by the user's voice (a cough, or an interruption
    // not yet long enough to stop it).
    let mut paused = false;
    // Frames, and of them those the decoder made up or faded in after a
    // gap, and the loudest: a debug line each second of the user's audio.
    let (mut frames, mut concealed, mut after_gap, mut loudest) = (0u32, 0u32, 0u32, -100f64);
    let slug = persona.slug.clone();
    let turn_over = |queue: &mut VecDeque<Job>, heard: Heard, last_speech: Instant, how: &'static str| {
        let ended = Instant::now();
        svc.mark(Stage::SpeechEnd, last_speech);
        svc.mark(Stage::TurnEnd, ended);
        metrics::counter!("mindbot_voice_turns_total", "persona" => slug.clone()).increment(1);
        debug!(after_speech_ms = (ended - last_speech).as_millis() as u64, how, "turn over");
        queue.retain(|j| !matches!(j, Job::Answer { .. }));
        queue.push_back(Job::Answer { heard, ended });
    };
    loop {
        let (deadline, due) = turn::next(&svc.turn, last_speech, paused, &judged);
        if reply.is_none() && !vad.speaking() {
            if let Some(job) = queue.pop_front() {
                draining = false;
                if matches!(job, Job::Answer { .. } | Job::Text(_)) {
                    observer.state(AgentState::Thinking);
                }
                let (shared, past) = (shared.clone(), history.clone());
                reply = Some(Reply(tokio::spawn(async move { perform(&shared, job, past).await })));
            }
        }
        tokio::select! {
            input = inputs.recv() => match input {
                None => break,
                Some(Input::Hear(s)) => {
                    info!("listening to the user");
                    stream = Some(s);
                    vad = Vad::new(svc.vad);
                    (judged, probing) = (Judgement::None, None);
                    if std::mem::take(&mut paused) {
                        source.resume(); // the track that paused the agent is gone
                    }
                }
                Some(Input::Greet) if svc.greet => {
                    queue.push_back(Job::Say(format!("Hello, I am {}. How can I help you today?", persona.name)));
                }
                Some(Input::Warning(left)) if svc.speak_warnings => queue.push_back(Job::Say(warning(left))),
                Some(Input::Typed(text)) => {
                    // Typing interrupts the agent as talking over it does.
                    if reply.take().is_some() || !source.queued().is_zero() {
                        source.clear();
                        observer.state(AgentState::Listening);
                    }
                    if std::mem::take(&mut paused) {
                        source.resume();
                    }
                    queue.retain(|j| !matches!(j, Job::Answer { .. } | Job::Text(_)));
                    queue.push_back(Job::Text(text));
                }
                Some(_) => {}
            },
            _ = sleep_until(deadline), if vad.speaking() => match due {
                Due::Resume => {
                    vad.cancel();
                    paused = false;
                    source.resume();
                    metrics::counter!("mindbot_voice_false_interruptions_total", "persona" => persona.slug.clone())
                        .increment(1);
                    info!("a short sound over the agent; it plays on");
                }
                Due::Probe => {
                    probing = Some(probe(&shared, vad.turn_so_far().to_vec()));
                    judged = Judgement::Pending;
                }
                Due::End => {
                    if let Some(VadEvent::TurnEnded(pcm)) = vad.flush() {
                        let heard = match (std::mem::replace(&mut judged, Judgement::None), probing.take()) {
                            (Judgement::Trailing(text), _) => Heard::Text(text),
                            (Judgement::Pending, Some(p)) => Heard::Pending(p),
                            _ => Heard::Audio(pcm),
                        };
                        turn_over(&mut queue, heard, last_speech, "quiet");
                    }
                }
            },
            heard = wait_probe(&mut probing) => {
                probing = None;
                match heard {
                    Ok(text) if turn::ending(&text) == Ending::Complete => {
                        judged = Judgement::None;
                        if vad.flush().is_some() {
                            turn_over(&mut queue, Heard::Text(text), last_speech, "complete");
                        }
                    }
                    Ok(text) => {
                        debug!(heard = %text, "the words trail off; waiting longer");
                        judged = Judgement::Trailing(text);
                    }
                    Err(e) => {
                        warn!(error = %e, "speech to text at the pause failed; ending the turn on quiet");
                        judged = Judgement::Failed;
                    }
                }
            }
            frame = next_frame(&mut stream) => match frame {
                None => stream = None,
                Some(frame) => {
                    let event = vad.push_from(&frame.samples, frame.origin);
                    concealed += u32::from(frame.origin == FrameOrigin::Concealed);
                    after_gap += u32::from(frame.origin == FrameOrigin::AfterGap);
                    if vad.last_was_speech() {
                        last_speech = Instant::now();
                        if judged != Judgement::None {
                            // The user went on: the judgement was of part of the turn.
                            judged = Judgement::None;
                            probing = None;
                        }
                    }
                    frames += 1;
                    loudest = loudest.max(Vad::level_dbfs(&frame.samples));
                    if frames % 50 == 0 {
                        debug!(frames, concealed, after_gap, loudest, floor = vad.noise_floor_dbfs(), speaking = vad.speaking(), "user audio");
                        (loudest, concealed, after_gap) = (-100.0, 0, 0);
                    }
                    match event {
                        Some(VadEvent::SpeechStarted) => {
                            debug!("user started speaking");
                            last_speech = Instant::now();
                            (judged, probing) = (Judgement::None, None);
                            if reply.is_some() || !source.queued().is_zero() {
                                // The user talks over the agent: hold its audio until we know
                                // whether this is a cough or an interruption.
                                source.pause();
                                paused = true;
                            }
                        }
                        Some(VadEvent::TurnEnded(_)) if paused => {
                            // Too short to stop the agent: it plays on.
                            (judged, probing, paused) = (Judgement::None, None, false);
                            source.resume();
                        }
                        Some(VadEvent::TurnEnded(pcm)) => {
                            (judged, probing) = (Judgement::None, None);
                            turn_over(&mut queue, Heard::Audio(pcm), last_speech, "backstop");
                        }
                        None => {}
                    }
                    if paused && vad.speech_frames() >= svc.turn.interruption_frames {
                        // Barge-in: the user talks over the agent.
                        paused = false;
                        reply = None; // aborts it
                        source.clear();
                        source.resume();
                        draining = false;
                        observer.state(AgentState::Listening);
                        metrics::counter!("mindbot_voice_barge_ins_total", "persona" => persona.slug.clone())
                            .increment(1);
                        info!("user spoke over the agent; stopped talking");
                    }
                }
            },
            done = wait(&mut reply) => {
                reply = None;
                draining = true;
                drain_at = Instant::now() + source.queued();
                if let Ok(added) = done {
                    history.extend(added);
                    let keep = svc.history_turns * 2;
                    if history.len() > keep {
                        history.drain(..history.len() - keep);
                    }
                }
            }
            _ = sleep_until(drain_at), if draining && reply.is_none() => {
                let left = source.queued();
                if left.is_zero() {
                    draining = false;
                    observer.state(AgentState::Listening);
                } else {
                    drain_at = Instant::now() + left.max(FRAME_DURATION);
                }
            }
            changed = balance.changed(), if meter_open => match changed {
                Err(_) => meter_open = false,
                Ok(()) => {
                    let remaining = balance.borrow_and_update().remaining;
                    goodbye_at = match remaining {
                        Some(r) if !svc.goodbye_lead.is_zero() => Some(Instant::now() + r.saturating_sub(svc.goodbye_lead)),
                        _ => None,
                    };
                    if remaining.is_some_and(|r| r > svc.goodbye_lead + Duration::from_secs(5)) {
                        said_goodbye = false; // a new card extended the session
                    }
                }
            },
            _ = sleep_until(goodbye_at.unwrap_or_else(Instant::now)), if goodbye_at.is_some() && !said_goodbye => {
                said_goodbye = true;
                reply = None;
                source.clear();
                source.resume();
                paused = false;
                queue.clear();
                queue.push_back(Job::Say(GOODBYE.to_string()));
            }
        }
    }
}

async fn next_frame(stream: &mut Option<AudioStream>) -> Option<AudioFrame> {
    match stream {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// The reply task under way; dropping it (barge-in, goodbye, the session's
/// end) aborts it, model, synthesis and playback together.
struct Reply(JoinHandle<Vec<Value>>);

impl Drop for Reply {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn wait(reply: &mut Option<Reply>) -> Result<Vec<Value>, tokio::task::JoinError> {
    match reply {
        Some(r) => (&mut r.0).await,
        None => std::future::pending().await,
    }
}

fn warning(left: Duration) -> String {
    let secs = left.as_secs();
    match secs {
        120.. => format!("Just so you know, you have about {} minutes left.", secs / 60),
        60..=119 => "Just so you know, you have about one minute left.".to_string(),
        _ => format!("Just so you know, you have {secs} seconds left."),
    }
}

/// Runs one job; returns the messages it adds to the conversation.
async fn perform(sh: &Shared, job: Job, history: Vec<Value>) -> Vec<Value> {
    match job {
        Job::Say(text) => {
            speak_all(sh, std::slice::from_ref(&text), None).await;
            vec![json!({"role": "assistant", "content": text})]
        }
        Job::Answer { heard, ended } => answer(sh, heard, ended, history).await,
        Job::Text(text) => {
            info!(chars = text.chars().count(), "typed user turn");
            respond(sh, text, None, history).await
        }
    }
}

/// Speaks sentences in order; a failing TTS leaves the rest unsaid.
async fn speak_all(sh: &Shared, sentences: &[String], ended: Option<Instant>) {
    let (tx, rx) = mpsc::channel(sentences.len().max(1));
    for s in sentences {
        let _ = tx.try_send(s.clone());
    }
    drop(tx);
    speaker(sh, rx, ended).await;
}

async fn speaker(sh: &Shared, mut rx: mpsc::Receiver<String>, ended: Option<Instant>) {
    let svc = &sh.svc;
    let Some(profile) = svc.tts.profile(&sh.persona.tts) else { return };
    let mut first = ended;
    let mut silent = false;
    let segment = sh.segments.fetch_add(1, Ordering::Relaxed);
    let mut spoke = false;
    let mut lead = true;
    while let Some(sentence) = rx.recv().await {
        if silent {
            continue; // keep taking sentences so the model is not held up
        }
        let mut on_first = || {
            if let Some(t) = first.take() {
                svc.mark(Stage::FirstAudio, Instant::now());
                let latency = t.elapsed() + FRAME_DURATION;
                metrics::histogram!("mindbot_voice_response_seconds").record(latency.as_secs_f64());
                info!(latency_ms = latency.as_millis() as u64, "first answer audio queued");
            }
            if !spoke {
                sh.observer.state(AgentState::Speaking);
            }
            spoke = true;
            sh.observer.emit(VoiceEvent::AgentSays { segment, text: sentence.clone() });
        };
        let said = svc
            .tts
            .speak(
                &svc.client,
                profile,
                &sh.persona.style,
                &sentence,
                &sh.source,
                std::mem::take(&mut lead),
                &mut on_first,
                &sh.usage,
            )
            .await;
        if said.is_ok() {
            metrics::counter!("mindbot_voice_tts_characters_total", "persona" => sh.persona.slug.clone(),
                "provider" => profile.endpoint.provider.clone())
            .increment(sentence.chars().count() as u64);
        }
        if let Err(e) = said {
            warn!(error = %e, "text to speech failed; staying silent for the rest of this answer");
            silent = true;
        }
    }
    if spoke {
        sh.observer.emit(VoiceEvent::AgentDone { segment });
    }
}

async fn answer(sh: &Shared, heard: Heard, ended: Instant, history: Vec<Value>) -> Vec<Value> {
    let svc = &sh.svc;
    let text = match heard {
        Heard::Text(t) => Ok(t),
        Heard::Pending(p) => wait_probe(&mut Some(p)).await,
        Heard::Audio(pcm) => {
            svc.stt.transcribe(&svc.client, &pcm, &sh.persona.slug, &sh.usage).await.map_err(|e| e.to_string())
        }
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            warn!(error = %e, "speech to text failed");
            speak_all(sh, &[PROBLEM.to_string()], None).await;
            return Vec::new();
        }
    };
    svc.mark(Stage::Transcript, Instant::now());
    if text.is_empty() {
        return Vec::new();
    }
    info!(heard = %text, "user turn");
    sh.observer.emit(VoiceEvent::UserSaid(text.clone()));
    respond(sh, text, Some(ended), history).await
}

/// The model's answer to the user's `text`, spoken as it streams in.
async fn respond(sh: &Shared, text: String, ended: Option<Instant>, history: Vec<Value>) -> Vec<Value> {
    let svc = &sh.svc;
    let mut added = vec![json!({"role": "user", "content": text})];
    let (tx, rx) = mpsc::channel::<String>(32);
    let producer = async {
        let mut messages = Vec::with_capacity(history.len() + 4);
        messages.push(json!({"role": "system", "content": sh.persona.system}));
        messages.extend(history);
        messages.extend(added.iter().cloned());
        // Closed without a true (aborted), it has no more to say: go on.
        let _ = sh.warmed.clone().wait_for(|w| *w).await;
        let (mut first_token, mut first_clause) = (true, true);
        'rounds: for _ in 0..MAX_TOOL_ROUNDS {
            let mut stream =
                match svc.llm.stream(&svc.client, &messages, &sh.persona.tools, &sh.persona.slug, &sh.usage).await {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(error = %e, "the language model failed");
                        let _ = tx.send(PROBLEM.to_string()).await;
                        break;
                    }
                };
            let mut sentences = Sentences::default();
            let mut said = String::new();
            loop {
                let next = stream.next().await;
                if std::mem::take(&mut first_token) {
                    svc.mark(Stage::FirstToken, Instant::now());
                }
                match next {
                    Ok(Some(Delta::Text(t))) => {
                        said.push_str(&t);
                        for s in sentences.push(&t) {
                            if std::mem::take(&mut first_clause) {
                                svc.mark(Stage::FirstClause, Instant::now());
                            }
                            let _ = tx.send(s).await;
                        }
                    }
                    Ok(Some(Delta::ToolCalls(calls))) => {
                        let call_msgs: Vec<Value> = calls
                            .iter()
                            .map(|c| {
                                json!({"id": c.id, "type": "function",
                                "function": {"name": c.name, "arguments": c.arguments}})
                            })
                            .collect();
                        let call = json!({"role": "assistant", "content": null, "tool_calls": call_msgs});
                        messages.push(call.clone());
                        added.push(call);
                        for c in &calls {
                            let result = tools::call(&c.name, &c.arguments, &sh.balance);
                            info!(tool = %c.name, "tool called");
                            // A model may invent names: only known ones become label values.
                            let label = if tools::IMPLEMENTED.contains(&c.name.as_str()) {
                                c.name.clone()
                            } else {
                                "unknown".into()
                            };
                            metrics::counter!("mindbot_voice_tool_calls_total", "tool" => label).increment(1);
                            let msg = json!({"role": "tool", "tool_call_id": c.id, "content": result});
                            messages.push(msg.clone());
                            added.push(msg);
                        }
                        continue 'rounds;
                    }
                    Ok(None) => {
                        if let Some(rest) = sentences.finish() {
                            if std::mem::take(&mut first_clause) {
                                svc.mark(Stage::FirstClause, Instant::now());
                            }
                            let _ = tx.send(rest).await;
                        }
                        added.push(json!({"role": "assistant", "content": said}));
                        break 'rounds;
                    }
                    Err(e) => {
                        warn!(error = %e, "the language model's answer broke off");
                        let _ = tx.send(PROBLEM.to_string()).await;
                        break 'rounds;
                    }
                }
            }
        }
        drop(tx);
    };
    tokio::join!(producer, speaker(sh, rx, ended));
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_read_naturally() {
        assert_eq!(warning(Duration::from_secs(300)), "Just so you know, you have about 5 minutes left.");
        assert_eq!(warning(Duration::from_secs(61)), "Just so you know, you have about one minute left.");
        assert_eq!(warning(Duration::from_secs(10)), "Just so you know, you have 10 seconds left.");
    }
}
