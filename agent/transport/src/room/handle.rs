//! `Room`: the owner's handle on a joined room.
//!
//! Every method sends a command to the participant's engine task and waits
//! for its answer with a deadline, so no call can hang on a stuck server.
//! Dropping the `Room` leaves the room (the engine sees the handle gone).

use std::collections::HashMap;
use std::time::Duration;

use livekit_protocol as proto;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::room::engine::Command;
use crate::room::streams::{self, TextStreamOptions, TextStreamWriter};
use crate::room::{AudioHeard, AudioSource, OutgoingData, RoomError};

/// How long a request to the engine (and through it the server) may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A joined room. Events arrive on the `RoomEvents` returned with it.
#[derive(Debug)]
pub struct Room {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) task: Option<JoinHandle<()>>,
    pub(crate) room_name: String,
    pub(crate) room_sid: String,
    pub(crate) identity: String,
    pub(crate) sid: String,
    pub(crate) heard: AudioHeard,
}

impl Room {
    /// The room's name.
    pub fn name(&self) -> &str {
        &self.room_name
    }

    /// The room's server id (`RM_...`); may be empty until the server assigns it.
    pub fn room_sid(&self) -> &str {
        &self.room_sid
    }

    /// Our participant identity (from the token).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Our participant sid (`PA_...`).
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// A second handle on the same participant, for a task that sends on
    /// the owner's behalf (attributes, data, text streams) so the owner never
    /// waits on the server for them. The participant stays until the owner
    /// leaves (or every handle is dropped); this one should not `leave`.
    pub fn sender(&self) -> Room {
        Room {
            commands: self.commands.clone(),
            task: None,
            room_name: self.room_name.clone(),
            room_sid: self.room_sid.clone(),
            identity: self.identity.clone(),
            sid: self.sid.clone(),
            heard: self.heard.clone(),
        }
    }

    /// When audio last arrived from each remote participant we subscribe
    /// to, and when ours last went out (see [`AudioHeard`]); it stays
    /// readable after the room is left.
    pub fn audio_heard(&self) -> AudioHeard {
        self.heard.clone()
    }

    /// Sends a user data packet to everyone or to `destinations`.
    pub async fn send_data(&self, data: OutgoingData) -> Result<(), RoomError> {
        self.request("sending data", |done| Command::SendData { data, done }).await?
    }

    /// Sends a LiveKit RPC request (version 1, on the reliable channel) to
    /// `to` and returns its id. The callee's acknowledgement or response
    /// comes as [`RoomEvent::RpcReceipt`](crate::room::RoomEvent::RpcReceipt)
    /// with that id; waiting for it, and what its absence means, is the caller's.
    pub async fn send_rpc_request(
        &self,
        to: &str,
        method: &str,
        payload: &str,
        response_timeout: Duration,
    ) -> Result<String, RoomError> {
        let id = uuid::Uuid::new_v4().to_string();
        let request = proto::RpcRequest {
            id: id.clone(),
            method: method.to_string(),
            payload: payload.to_string(),
            response_timeout_ms: response_timeout.as_millis().min(u32::MAX as u128) as u32,
            version: 1,
            ..Default::default()
        };
        let value = proto::data_packet::Value::RpcRequest(request);
        streams::send_packet(&self.commands, value, vec![to.to_string()], String::new()).await?;
        Ok(id)
    }

    /// Opens a text stream (LiveKit data streams): sends its header and
    /// returns the writer that sends text as it is produced.
    pub async fn stream_text(&self, options: TextStreamOptions) -> Result<TextStreamWriter, RoomError> {
        let id = streams::new_stream_id();
        let header = streams::header(&options, &id, None);
        let sender = options.sender_identity.unwrap_or_default();
        let value = proto::data_packet::Value::StreamHeader(header);
        streams::send_packet(&self.commands, value, options.destinations.clone(), sender.clone()).await?;
        Ok(TextStreamWriter {
            commands: self.commands.clone(),
            stream_id: id,
            destinations: options.destinations,
            sender_identity: sender,
            next_chunk: 0,
        })
    }

    /// Sends `text` as one whole text stream (header with its length,
    /// chunks, trailer); returns the stream id.
    pub async fn send_text(&self, text: &str, options: TextStreamOptions) -> Result<String, RoomError> {
        let id = streams::new_stream_id();
        let header = streams::header(&options, &id, Some(text.len() as u64));
        let sender = options.sender_identity.unwrap_or_default();
        let value = proto::data_packet::Value::StreamHeader(header);
        streams::send_packet(&self.commands, value, options.destinations.clone(), sender.clone()).await?;
        let mut writer = TextStreamWriter {
            commands: self.commands.clone(),
            stream_id: id.clone(),
            destinations: options.destinations,
            sender_identity: sender,
            next_chunk: 0,
        };
        writer.write(text).await?;
        writer.close(HashMap::new()).await?;
        Ok(id)
    }

    /// Publishes a microphone audio track named `name` and returns its PCM input.
    /// Returns once the server has the track and media can flow.
    pub async fn publish_audio(&self, name: &str) -> Result<AudioSource, RoomError> {
        self.request("publishing audio", |done| Command::PublishAudio { name: name.to_string(), done }).await?
    }

    /// Sets (merges) our participant attributes; an empty value removes a key.
    pub async fn set_attributes(&self, attributes: HashMap<String, String>) -> Result<(), RoomError> {
        let update = proto::UpdateParticipantMetadata { attributes, ..Default::default() };
        self.request("updating attributes", |done| Command::UpdateLocal { update, done }).await?
    }

    /// Sets our participant metadata string.
    pub async fn set_metadata(&self, metadata: &str) -> Result<(), RoomError> {
        let update = proto::UpdateParticipantMetadata { metadata: metadata.to_string(), ..Default::default() };
        self.request("updating metadata", |done| Command::UpdateLocal { update, done }).await?
    }

    /// Leaves the room: tells the server, closes the connections, and waits
    /// (briefly) for the engine to finish. `Disconnected { ClientInitiated }` follows.
    pub async fn leave(mut self) -> Result<(), RoomError> {
        let (done, left) = oneshot::channel();
        if self.commands.send(Command::Leave { done }).await.is_ok() {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, left).await;
        }
        if let Some(task) = self.task.take() {
            if tokio::time::timeout(REQUEST_TIMEOUT, task).await.is_err() {
                return Err(RoomError::Timeout { step: "leaving the room", after: REQUEST_TIMEOUT });
            }
        }
        Ok(())
    }

    /// Drops the signaling connection as a network failure would, to exercise resume.
    #[doc(hidden)]
    pub async fn simulate_signal_loss(&self) {
        let _ = self.commands.send(Command::DropSignal).await;
    }

    async fn request<T>(
        &self,
        step: &'static str,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, RoomError> {
        let (done, answer) = oneshot::channel();
        self.commands.send(command(done)).await.map_err(|_| RoomError::Closed)?;
        match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(RoomError::Closed),
            Err(_) => Err(RoomError::Timeout { step, after: REQUEST_TIMEOUT }),
        }
    }
}
