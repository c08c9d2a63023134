//! The agent's voice: hears the user, answers with the persona's prompt and
//! voice, and speaks the session's greeting, warnings and goodbye.
//!
//! `VoiceService` holds one HTTP client and the three provider stages
//! (speech to text, the language model, text to speech profiles), built
//! once from `[voice]`; `start` publishes the agent's audio track and runs
//! one session's [`pipeline`] as a task owned by the returned handle. The
//! session keeps metering on its own: nothing here touches money, and a
//! failing provider never ends a session. The handle also carries the
//! pipeline's reports ([`observe`]: state, transcripts, spoken text) and
//! takes typed user turns.

mod llm;
pub mod observe;
mod pipeline;
mod prompt;
mod provider;
mod stt;
mod tools;
mod tts;
mod turn;
mod vad;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use metering::meter::Snapshot;
use mindbot_transport::room::{AudioStream, Room, RoomError, FRAME_DURATION};
use personas::PersonaConfig;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::VoiceConfig;
use pipeline::{Input, Persona};
use provider::Endpoint;

/// Name of the agent's published audio track.
pub const TRACK_NAME: &str = "agent-voice";

/// The providers and settings every session's pipeline shares.
pub struct VoiceService {
    client: reqwest::Client,
    stt: stt::Stt,
    llm: llm::Llm,
    tts: tts::Tts,
    vad: vad::VadSettings,
    greet: bool,
    speak_warnings: bool,
    goodbye_lead: Duration,
    history_turns: usize,
    /// `voice.llm.tools`: whether the personas' tools are offered to the model.
    offer_tools: bool,
    turn: turn::TurnSettings,
    /// The stages of each turn, when something (`bench voice`) records them.
    marks: Mutex<Option<Vec<(Stage, Instant)>>>,
}

/// A point in answering a turn, in order (`bench voice` times each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// The last speech frame of the user's turn arrived.
    SpeechEnd,
    /// The turn was judged over.
    TurnEnd,
    /// Its transcript was in.
    Transcript,
    /// The model's first token (text or tool call) arrived.
    FirstToken,
    /// The first clause or sentence went to text to speech.
    FirstClause,
    /// The first answer audio was queued on the agent's track.
    FirstAudio,
}

impl VoiceService {
    /// The service, or `None` when `voice.enabled` is off.
    pub fn from_config(c: &VoiceConfig) -> Result<Option<Arc<VoiceService>>> {
        if !c.enabled {
            return Ok(None);
        }
        if !c.llm.tools {
            tracing::info!(
                provider = %c.llm.provider,
                model = %c.llm.model,
                "voice.llm.tools is false: the personas' tools (get_balance) are not offered to this model"
            );
        }
        let frames = |ms: u64| (ms / FRAME_DURATION.as_millis() as u64).max(1) as usize;
        let client = http_client()?;
        let turn = turn::TurnSettings {
            mode: c.turn_detection,
            pause: Duration::from_millis(c.turn_pause_ms),
            end_of_turn: Duration::from_millis(c.end_of_turn_ms),
            trailing: Duration::from_millis(c.trailing_end_of_turn_ms),
            interruption_frames: frames(c.interruption_ms),
        };
        let endpoint = |stage, provider: &str, base_url: &str, model: &str, key: &crate::config::Secret, ms| Endpoint {
            stage,
            provider: provider.to_string(),
            base_url: base_url.to_string(),
            model: model.to_string(),
            api_key: key.clone(),
            timeout: Duration::from_millis(ms),
        };
        let profiles: BTreeMap<String, tts::TtsProfile> = c
            .tts
            .iter()
            .map(|(name, p)| {
                let ep = endpoint("tts", name, &p.base_url, &p.model, &p.api_key, p.timeout_ms);
                (name.clone(), tts::TtsProfile { endpoint: ep, voices: p.voices.clone() })
            })
            .collect();
        Ok(Some(Arc::new(VoiceService {
            client,
            stt: stt::Stt {
                endpoint: endpoint(
                    "stt",
                    &c.stt.provider,
                    &c.stt.base_url,
                    &c.stt.model,
                    &c.stt.api_key,
                    c.stt.timeout_ms,
                ),
            },
            llm: llm::Llm {
                warm_up: c.llm.warm_up,
                endpoint: endpoint(
                    "llm",
                    &c.llm.provider,
                    &c.llm.base_url,
                    &c.llm.model,
                    &c.llm.api_key,
                    c.llm.timeout_ms,
                ),
                max_tokens: c.llm.max_tokens,
            },
            tts: tts::Tts { profiles },
            vad: vad::VadSettings {
                speech_dbfs: c.speech_dbfs,
                noise_margin_db: c.noise_margin_db,
                start_frames: frames(c.speech_start_ms),
                // A backstop only: the pipeline ends turns by the clock (turn.rs).
                end_frames: frames(turn.longest_quiet().as_millis() as u64),
                max_frames: frames(c.max_turn_seconds * 1000),
            },
            greet: c.greet,
            speak_warnings: c.speak_warnings,
            goodbye_lead: Duration::from_secs(c.goodbye_lead_seconds),
            history_turns: c.history_turns,
            offer_tools: c.llm.tools,
            turn,
            marks: Mutex::new(None),
        })))
    }

    /// Starts recording each turn's [`Stage`]s (for `bench voice`).
    pub fn record_stages(&self) {
        *self.marks.lock().unwrap_or_else(|e| e.into_inner()) = Some(Vec::new());
    }

    /// The stages recorded since the last call.
    pub fn take_stages(&self) -> Vec<(Stage, Instant)> {
        self.marks.lock().unwrap_or_else(|e| e.into_inner()).as_mut().map(std::mem::take).unwrap_or_default()
    }

    fn mark(&self, stage: Stage, at: Instant) {
        if let Some(marks) = self.marks.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            marks.push((stage, at));
        }
    }

    /// Publishes the agent's track and starts the conversation for `persona`;
    /// `balance` is the session's meter, for `get_balance` and the goodbye;
    /// what the providers are asked for is counted in the session's `usage`.
    pub async fn start(
        self: &Arc<Self>,
        room: &Room,
        persona: &PersonaConfig,
        balance: watch::Receiver<Snapshot>,
        usage: Arc<crate::usage::SessionUsage>,
    ) -> Result<VoiceHandle, RoomError> {
        let source = room.publish_audio(TRACK_NAME).await?;
        let persona = Arc::new(Persona {
            slug: persona.slug.clone(),
            name: persona.name.clone(),
            tts: persona.voice.tts.clone(),
            style: persona.voice.style.clone(),
            system: prompt::system_prompt(persona, self.offer_tools),
            tools: if self.offer_tools { tools::definitions(&persona.tools) } else { Vec::new() },
        });
        tracing::info!(
            persona = %persona.slug,
            tts = %persona.tts,
            style = %persona.style,
            tools = persona.tools.len(),
            "voice started"
        );
        let (tx, rx) = mpsc::channel(16);
        let (events_tx, events) = mpsc::channel(observe::CAPACITY);
        let track_sid = source.track_sid().to_string();
        let observer = observe::Observer(events_tx);
        let task = tokio::spawn(pipeline::run(self.clone(), source, persona, balance, rx, observer, usage));
        Ok(VoiceHandle { tx, task, events, track_sid })
    }
}

impl VoiceService {
    /// Speech for `text` in the default profile's `style` voice, 48 kHz.
    pub async fn synthesize(&self, style: &str, text: &str) -> Result<Vec<i16>> {
        let profile = self.tts.profile("default").context("no voice.tts.default profile")?;
        Ok(self.tts.synthesize(&self.client, profile, style, text).await?)
    }
}

/// The one HTTP client every stage shares: pooled connections, rustls with
/// the worker's TLS settings (the same roots as LiveKit's sockets).
pub(crate) fn http_client() -> Result<reqwest::Client> {
    let tls = mindbot_transport::tls_client_config(&[]).map_err(|e| anyhow::anyhow!("TLS settings: {e}"))?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .context("building the voice HTTP client")
}

/// One session's running voice; dropping it stops the voice at once.
pub struct VoiceHandle {
    tx: mpsc::Sender<Input>,
    task: JoinHandle<()>,
    events: mpsc::Receiver<observe::VoiceEvent>,
    track_sid: String,
}

impl VoiceHandle {
    /// Listen to the user's audio track.
    pub fn hear(&self, stream: AudioStream) {
        let _ = self.tx.try_send(Input::Hear(stream));
    }

    /// Say hello (the session has started).
    pub fn greet(&self) {
        let _ = self.tx.try_send(Input::Greet);
    }

    /// Speak a balance warning.
    pub fn warn(&self, remaining: Duration) {
        let _ = self.tx.try_send(Input::Warning(remaining));
    }

    /// A typed user turn: answered like a spoken one, without speech to text.
    pub fn typed(&self, text: String) {
        if self.tx.try_send(Input::Typed(text)).is_err() {
            tracing::warn!("typed turn dropped: the voice is behind");
        }
    }

    /// The pipeline's next report; never ends while the voice runs.
    pub async fn next_event(&mut self) -> Option<observe::VoiceEvent> {
        self.events.recv().await
    }

    /// The server's id for the agent's audio track.
    pub fn track_sid(&self) -> &str {
        &self.track_sid
    }
}

impl Drop for VoiceHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
