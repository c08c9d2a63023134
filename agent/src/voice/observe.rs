//! What the pipeline reports as it goes, for the session to show the user:
//! the agent's state, the user's final transcript of each turn and the
//! agent's words as it speaks them.
//!
//! The pipeline only reports; turning reports into LiveKit's conventions
//! (the `lk.agent.state` attribute, `lk.transcription` text streams) is the
//! session's (`conventions.rs`), so the pipeline knows nothing of LiveKit's
//! attribute names and a slow room never holds up speech.

use tokio::sync::mpsc;

/// The agent's state as LiveKit's agents frameworks name it (`lk.agent.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    /// Joined, not yet ready to listen.
    Initializing,
    /// Waiting for (or hearing) the user.
    Listening,
    /// A user turn ended: transcribing and asking the model.
    Thinking,
    /// The agent's audio is playing.
    Speaking,
    /// No voice pipeline runs (`voice.enabled` is off).
    Idle,
}

impl AgentState {
    /// The attribute value LiveKit's frontends read.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Initializing => "initializing",
            AgentState::Listening => "listening",
            AgentState::Thinking => "thinking",
            AgentState::Speaking => "speaking",
            AgentState::Idle => "idle",
        }
    }
}

/// One report from the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoiceEvent {
    State(AgentState),
    /// The user's final transcript of a spoken turn.
    UserSaid(String),
    /// The agent's first audio of `text` (a sentence) in reply `segment` is queued.
    AgentSays {
        segment: u64,
        text: String,
    },
    /// Reply `segment` was said in full (an interrupted one just stops).
    AgentDone {
        segment: u64,
    },
}

/// Reports held before new ones are dropped (a session reads them at once).
pub const CAPACITY: usize = 256;

/// The pipeline's sending side; never blocks speech.
#[derive(Debug, Clone)]
pub struct Observer(pub(super) mpsc::Sender<VoiceEvent>);

impl Observer {
    pub fn emit(&self, event: VoiceEvent) {
        if let Err(mpsc::error::TrySendError::Full(event)) = self.0.try_send(event) {
            tracing::warn!(?event, "voice report dropped: the session is not reading them");
        }
    }

    pub fn state(&self, state: AgentState) {
        self.emit(VoiceEvent::State(state));
    }
}
