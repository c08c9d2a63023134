//! The engine's signaling side: the connection while there is one, the
//! resume that replaces it when it drops, and the metadata requests
//! waiting for the server's answer on it.
//!
//! A dropped connection does not stop the media: the engine resumes in the
//! background (`reconnect=1` with our participant sid, with backoff) while
//! the peer connections go on. What was asked on the old connection is
//! answered with an error, since its answer will not come.

use std::collections::HashMap;
use std::time::Duration;

use livekit_protocol::{self as proto, signal_request, signal_response::Message as Msg};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::room::{DisconnectReason, RoomError};
use crate::transport::signal::{JoinMode, SignalConn};

/// Resume attempts after the signaling connection drops, and the wait before each.
const RESUME_BACKOFF: [Duration; 3] = [Duration::from_millis(200), Duration::from_secs(1), Duration::from_secs(3)];

/// A new connection and its first message, or why resuming failed.
pub(super) type Resumed = Result<(SignalConn, Msg), RoomError>;

/// Who waits for the server's answer to a request.
pub(super) type RequestReply = oneshot::Sender<Result<(), RoomError>>;

/// How to reach the server again, and the connection in use.
pub(super) struct Signaling {
    url: String,
    token: String,
    participant_sid: String,
    timeout: Duration,
    extra_roots: Vec<Vec<u8>>,
    conn: Option<SignalConn>,
    resuming: Option<JoinHandle<Resumed>>,
    requests: HashMap<u32, RequestReply>,
    next_request_id: u32,
}

impl Signaling {
    /// Wraps the connection the join came on; `timeout` bounds each resume attempt.
    pub(super) fn new(
        conn: SignalConn,
        url: &str,
        token: &str,
        participant_sid: String,
        timeout: Duration,
        extra_roots: Vec<Vec<u8>>,
    ) -> Self {
        Signaling {
            url: url.to_string(),
            token: token.to_string(),
            participant_sid,
            timeout,
            extra_roots,
            conn: Some(conn),
            resuming: None,
            requests: HashMap::new(),
            next_request_id: 0,
        }
    }

    /// Whether a connection is up.
    pub(super) fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Whether a resume is running.
    pub(super) fn is_resuming(&self) -> bool {
        self.resuming.is_some()
    }

    /// The token for resuming, as the server last refreshed it.
    pub(super) fn refresh_token(&mut self, token: String) {
        self.token = token;
    }

    /// Sends on the connection; without one the message is dropped (a
    /// resume is on its way and renegotiates what matters).
    pub(super) async fn send(&mut self, message: signal_request::Message) -> Result<(), RoomError> {
        match self.conn.as_mut() {
            Some(conn) => conn.send(message).await,
            None => {
                tracing::debug!("signaling down; message dropped");
                Ok(())
            }
        }
    }

    /// The next server message, or the outcome of the running resume;
    /// cancel-safe, so it can sit in a `select!`.
    pub(super) async fn next(&mut self) -> Heard {
        let Signaling { conn, resuming, .. } = self;
        tokio::select! {
            message = recv(conn) => Heard::Message(message),
            resumed = join(resuming) => Heard::Resumed(resumed),
        }
    }

    /// Drops the connection (as a network failure would); `false` if there was none.
    pub(super) fn drop_connection(&mut self) -> bool {
        self.conn.take().is_some()
    }

    /// The connection is gone: answers what waited on it and starts resuming.
    pub(super) fn lose(&mut self) {
        self.conn = None;
        for (_, done) in self.requests.drain() {
            let _ = done.send(Err(RoomError::Signal("signaling connection lost; try again".into())));
        }
        let (url, token, sid) = (self.url.clone(), self.token.clone(), self.participant_sid.clone());
        self.resuming = Some(tokio::spawn(resume(url, token, sid, self.timeout, self.extra_roots.clone())));
    }

    /// Takes the resumed connection into use.
    pub(super) fn resumed_on(&mut self, conn: SignalConn) {
        self.conn = Some(conn);
    }

    /// Numbers `update` and remembers who waits for its answer; an error
    /// while reconnecting (the request could not be answered).
    pub(super) fn request(
        &mut self,
        mut update: proto::UpdateParticipantMetadata,
        done: RequestReply,
    ) -> Option<signal_request::Message> {
        if self.conn.is_none() {
            let _ = done.send(Err(RoomError::Signal("reconnecting; try again".into())));
            return None;
        }
        self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
        update.request_id = self.next_request_id;
        self.requests.insert(update.request_id, done);
        Some(signal_request::Message::UpdateMetadata(update))
    }

    /// The server's answer to one of our requests.
    pub(super) fn answered(&mut self, response: proto::RequestResponse) {
        if let Some(done) = self.requests.remove(&response.request_id) {
            let ok = response.reason == proto::request_response::Reason::Ok as i32;
            let _ = done.send(if ok { Ok(()) } else { Err(RoomError::Refused(response.message)) });
        }
    }

    /// Stops any resume and closes the connection politely.
    pub(super) async fn close(&mut self) {
        if let Some(resuming) = self.resuming.take() {
            resuming.abort();
        }
        if let Some(conn) = self.conn.take() {
            conn.close().await;
        }
    }
}

/// What `Signaling::next` brings. Lives for one turn of the engine's loop,
/// as the bare message did before, so its size is not worth a box.
#[allow(clippy::large_enum_variant)]
pub(super) enum Heard {
    /// A server message; `Ok(None)` when the server closed the connection.
    Message(Result<Option<Msg>, RoomError>),
    /// The resume finished, either way.
    Resumed(Resumed),
}

/// The next message, or never while there is no connection.
async fn recv(conn: &mut Option<SignalConn>) -> Result<Option<Msg>, RoomError> {
    match conn {
        Some(conn) => conn.recv().await,
        None => std::future::pending().await,
    }
}

/// The outcome of the running resume (which is then over), or never while none runs.
async fn join(resuming: &mut Option<JoinHandle<Resumed>>) -> Resumed {
    let Some(handle) = resuming.as_mut() else {
        return std::future::pending().await;
    };
    let outcome = handle.await.unwrap_or_else(|e| Err(RoomError::ResumeTask(e)));
    *resuming = None;
    outcome
}

/// Reopens signaling with `reconnect=1`, with backoff; returns the socket and its first message.
async fn resume(
    url: String,
    token: String,
    participant_sid: String,
    timeout: Duration,
    extra_roots: Vec<Vec<u8>>,
) -> Resumed {
    let mode = JoinMode::Resume { participant_sid };
    let mut last = RoomError::Signal("no resume attempt made".into());
    for wait in RESUME_BACKOFF {
        tokio::time::sleep(wait).await;
        let mut conn = match SignalConn::open(&url, &token, &mode, timeout, &extra_roots).await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!(error = %e, "resume attempt failed");
                last = e;
                continue;
            }
        };
        match tokio::time::timeout(timeout, conn.recv()).await {
            Ok(Ok(Some(Msg::Leave(leave)))) => {
                return Err(RoomError::JoinRefused(DisconnectReason::from_server(leave.reason)));
            }
            Ok(Ok(Some(first))) => return Ok((conn, first)),
            Ok(Ok(None)) => last = RoomError::Signal("closed during resume".into()),
            Ok(Err(e)) => last = e,
            Err(_) => last = RoomError::Timeout { step: "the resume response", after: timeout },
        }
    }
    Err(last)
}
