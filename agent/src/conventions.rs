//! LiveKit's agent conventions, as its agents frameworks (1.x) define them,
//! so LiveKit's own frontends (the agent hooks of `@livekit/components-react`,
//! the agent starters, the playground) show this agent as they show theirs:
//! - participant attribute `lk.agent.state` (`initializing`, `listening`,
//!   `thinking`, `speaking`, `idle` when voice is off), set only on change;
//! - transcriptions as text streams on topic `lk.transcription`: the user's
//!   final transcript of each turn, sent on the user's behalf (header
//!   attributes `lk.segment_id`, `lk.transcribed_track_id` = their audio
//!   track, `lk.transcription_final` = `true`), and the agent's words as it
//!   speaks them, one stream per reply, written a sentence at a time as its
//!   audio is queued (`lk.transcription_final` = `false` on the header and
//!   `true` on the trailer; an interrupted reply's stream ends where the
//!   agent stopped);
//! - typed user input: a text stream from the user on topic `lk.chat` is a
//!   user turn (it is not echoed as a transcription: LiveKit's frontends show
//!   what they sent on `lk.chat` themselves, and LiveKit's agents do not echo it).
//!
//! The session hands updates to a [`Publisher`], whose task does the
//! sending in order, so the session's loop (presence, limits, hang-up) never
//! waits on a server round trip; the voice pipeline only reports
//! (`voice::observe`). Nothing here touches money.

use std::collections::HashMap;
use std::time::Duration;

use mindbot_transport::room::{Room, TextStream, TextStreamOptions, TextStreamWriter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn, Instrument};

use crate::voice::observe::{AgentState, VoiceEvent};

/// The agent's state attribute.
pub const ATTR_AGENT_STATE: &str = "lk.agent.state";
/// The transcription topic.
pub const TOPIC_TRANSCRIPTION: &str = "lk.transcription";
/// The typed-input topic.
pub const TOPIC_CHAT: &str = "lk.chat";
pub const ATTR_SEGMENT_ID: &str = "lk.segment_id";
pub const ATTR_TRACK_ID: &str = "lk.transcribed_track_id";
pub const ATTR_FINAL: &str = "lk.transcription_final";

/// Longest typed turn taken, in characters (longer ones are cut).
pub const MAX_TYPED_CHARS: usize = 2_000;

/// What the session tells the conventions' task.
enum Update {
    AgentTrack(String),
    UserTrack(String),
    State(AgentState),
    Voice(VoiceEvent),
}

/// The session's handle: queues updates and returns at once; one task per
/// session sends them, in order, through its own handle on the room. The
/// queue holds what the pipeline reported (itself bounded) and the session's
/// few updates.
pub struct Publisher {
    updates: mpsc::UnboundedSender<Update>,
    task: JoinHandle<()>,
}

impl Publisher {
    /// Starts the task for `user`'s session; `state` is the one already set.
    pub fn start(room: Room, user: &str, state: AgentState) -> Self {
        let (updates, mut queued) = mpsc::unbounded_channel();
        let mut c = Conventions::new(user, state);
        let task = tokio::spawn(
            async move {
                while let Some(update) = queued.recv().await {
                    match update {
                        Update::AgentTrack(sid) => c.set_agent_track(&sid),
                        Update::UserTrack(sid) => c.set_user_track(&sid),
                        Update::State(state) => c.set_state(&room, state).await,
                        Update::Voice(event) => c.on_voice(&room, event).await,
                    }
                }
            }
            .in_current_span(),
        );
        Publisher { updates, task }
    }

    pub fn agent_track(&self, sid: &str) {
        let _ = self.updates.send(Update::AgentTrack(sid.to_string()));
    }

    pub fn user_track(&self, sid: &str) {
        let _ = self.updates.send(Update::UserTrack(sid.to_string()));
    }

    pub fn state(&self, state: AgentState) {
        let _ = self.updates.send(Update::State(state));
    }

    pub fn voice(&self, event: VoiceEvent) {
        let _ = self.updates.send(Update::Voice(event));
    }

    /// Lets what is queued go out (for at most `within`), then stops.
    pub async fn finish(self, within: Duration) {
        let Publisher { updates, mut task } = self;
        drop(updates);
        if tokio::time::timeout(within, &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// One session's side of the conventions.
struct Conventions {
    /// The user's identity (transcripts of their turns are sent as theirs).
    user: String,
    /// The user's audio track, once subscribed.
    user_track: Option<String>,
    /// The agent's own audio track.
    agent_track: String,
    state: Option<AgentState>,
    /// The agent's reply being transcribed: its pipeline segment and stream.
    speaking: Option<(u64, TextStreamWriter)>,
}

impl Conventions {
    /// For `user`'s session; `state` is the one already set.
    pub fn new(user: &str, state: AgentState) -> Self {
        Conventions {
            user: user.to_string(),
            user_track: None,
            agent_track: String::new(),
            state: Some(state),
            speaking: None,
        }
    }

    /// The agent's own audio track (once voice has published it).
    pub fn set_agent_track(&mut self, sid: &str) {
        self.agent_track = sid.to_string();
    }

    /// The user's audio track (for `lk.transcribed_track_id`).
    pub fn set_user_track(&mut self, sid: &str) {
        self.user_track = Some(sid.to_string());
    }

    /// Sets `lk.agent.state` if it changed.
    pub async fn set_state(&mut self, room: &Room, state: AgentState) {
        if self.state == Some(state) {
            return;
        }
        self.state = Some(state);
        let attributes = HashMap::from([(ATTR_AGENT_STATE.to_string(), state.as_str().to_string())]);
        if let Err(e) = room.set_attributes(attributes).await {
            warn!(error = %e, state = state.as_str(), "could not set lk.agent.state");
        }
    }

    /// Turns one pipeline report into attributes and transcription streams.
    pub async fn on_voice(&mut self, room: &Room, event: VoiceEvent) {
        match event {
            VoiceEvent::State(state) => {
                if state != AgentState::Speaking {
                    // Listening or thinking again: the reply's speech is over (or was cut off).
                    self.end_agent_segment(None).await;
                }
                self.set_state(room, state).await;
            }
            VoiceEvent::UserSaid(text) => {
                let mut attributes = segment_attributes(self.user_track.as_deref());
                attributes.insert(ATTR_FINAL.into(), "true".into());
                let options = TextStreamOptions {
                    topic: TOPIC_TRANSCRIPTION.into(),
                    attributes,
                    // The protocol's `generated`: text an agent made from a participant's audio.
                    generated: true,
                    sender_identity: Some(self.user.clone()),
                    ..Default::default()
                };
                if let Err(e) = room.send_text(&text, options).await {
                    warn!(error = %e, "could not send the user's transcription");
                }
            }
            VoiceEvent::AgentSays { segment, text } => {
                if self.speaking.as_ref().is_some_and(|(s, _)| *s != segment) {
                    self.end_agent_segment(None).await;
                }
                if self.speaking.is_none() {
                    let mut attributes = segment_attributes(Some(&self.agent_track));
                    attributes.insert(ATTR_FINAL.into(), "false".into());
                    let options =
                        TextStreamOptions { topic: TOPIC_TRANSCRIPTION.into(), attributes, ..Default::default() };
                    match room.stream_text(options).await {
                        Ok(writer) => self.speaking = Some((segment, writer)),
                        Err(e) => {
                            warn!(error = %e, "could not open the agent's transcription");
                            return;
                        }
                    }
                }
                if let Some((_, writer)) = self.speaking.as_mut() {
                    // Sentences come without their separating space.
                    let piece = if writer_started(writer) { format!(" {text}") } else { text };
                    if let Err(e) = writer.write(&piece).await {
                        warn!(error = %e, "could not send the agent's transcription");
                    }
                }
            }
            VoiceEvent::AgentDone { segment } => self.end_agent_segment(Some(segment)).await,
        }
    }

    /// Closes the agent's open transcription stream (only `segment`'s, if given).
    async fn end_agent_segment(&mut self, segment: Option<u64>) {
        if segment.is_some_and(|s| self.speaking.as_ref().is_some_and(|(open, _)| *open != s)) {
            return;
        }
        if let Some((_, writer)) = self.speaking.take() {
            let trailer = HashMap::from([(ATTR_FINAL.to_string(), "true".to_string())]);
            if let Err(e) = writer.close(trailer).await {
                warn!(error = %e, "could not end the agent's transcription");
            }
        }
    }
}

/// The typed turn in a text stream, if it is one: from `user`, on
/// `lk.chat`, not blank; cut to [`MAX_TYPED_CHARS`].
pub fn typed_turn(user: &str, stream: &TextStream) -> Option<String> {
    if stream.topic != TOPIC_CHAT || stream.sender != user {
        return None;
    }
    let text = stream.text.trim();
    if text.is_empty() {
        return None;
    }
    debug!(chars = text.chars().count(), "typed turn received");
    Some(text.chars().take(MAX_TYPED_CHARS).collect())
}

/// A new segment id (LiveKit's agents use `SG_` and a short random id).
fn segment_attributes(track: Option<&str>) -> HashMap<String, String> {
    let mut attributes = HashMap::new();
    attributes.insert(ATTR_SEGMENT_ID.to_string(), format!("SG_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
    if let Some(track) = track.filter(|t| !t.is_empty()) {
        attributes.insert(ATTR_TRACK_ID.to_string(), track.to_string());
    }
    attributes
}

fn writer_started(writer: &TextStreamWriter) -> bool {
    writer.chunks_sent() > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(sender: &str, topic: &str, text: &str) -> TextStream {
        TextStream {
            stream_id: "s".into(),
            sender: sender.into(),
            topic: topic.into(),
            attributes: HashMap::new(),
            text: text.into(),
            timestamp_ms: 0,
            reason: String::new(),
        }
    }

    #[test]
    fn only_the_users_non_blank_chat_is_a_typed_turn_and_it_is_cut_to_length() {
        let c = |s: &TextStream| typed_turn("alice", s);
        assert_eq!(c(&stream("alice", TOPIC_CHAT, "  hi  ")).as_deref(), Some("hi"));
        assert_eq!(c(&stream("mallory", TOPIC_CHAT, "hi")), None);
        assert_eq!(c(&stream("alice", "other", "hi")), None);
        assert_eq!(c(&stream("alice", TOPIC_CHAT, " \n ")), None);
        let long = "x".repeat(MAX_TYPED_CHARS + 10);
        assert_eq!(c(&stream("alice", TOPIC_CHAT, &long)).unwrap().len(), MAX_TYPED_CHARS);
    }
}
