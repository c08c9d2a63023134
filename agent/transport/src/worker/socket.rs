//! The worker's WebSocket to LiveKit's `/agent` endpoint.
//!
//! Opens the socket with the worker token in the `Authorization` header,
//! registers (the first server message must be the register response), and
//! then moves binary protobuf frames: `WorkerMessage` out, `ServerMessage`
//! in. HTTP refusals become typed errors. It keeps no job state and never
//! retries; the worker loop decides what a failure means.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use livekit_protocol::{self as proto, server_message, worker_message, ServerMessage, WorkerMessage};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::error::WorkerError;
use super::options::WorkerOptions;

/// What one read from the socket gave.
#[derive(Debug)]
pub(super) enum Incoming {
    /// A protocol message (boxed: an availability request is near a kilobyte).
    Message(Box<server_message::Message>),
    /// A WebSocket control frame (the server pings every 10 s) or an empty
    /// message: proof of life, nothing to act on.
    Heartbeat,
}

/// One open, registered agent connection.
pub(super) struct Socket {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// The registration the server confirmed.
#[derive(Debug, Clone)]
pub(super) struct Registered {
    pub(super) worker_id: String,
    pub(super) server_version: String,
    pub(super) node_id: String,
}

/// Opens `/agent` and registers as a room-job worker; fails within `options.connect_timeout`.
pub(super) async fn open(options: &WorkerOptions) -> Result<(Socket, Registered), WorkerError> {
    let token = (options.token)().map_err(WorkerError::Token)?;
    let after = options.connect_timeout;
    tokio::time::timeout(after, async {
        let mut socket = Socket::connect(&options.url, &token).await?;
        socket.send(worker_message::Message::Register(register_request(options))).await?;
        let registered = loop {
            match socket.recv().await? {
                Some(Incoming::Heartbeat) => continue,
                Some(Incoming::Message(message)) => match *message {
                    server_message::Message::Register(r) => break r,
                    other => {
                        let got = format!("expected the register response first, got {other:?}");
                        return Err(WorkerError::Protocol(got));
                    }
                },
                None => {
                    return Err(WorkerError::Protocol("the server closed the connection before registering".into()))
                }
            }
        };
        let info = registered.server_info.unwrap_or_default();
        Ok((
            socket,
            Registered { worker_id: registered.worker_id, server_version: info.version, node_id: info.node_id },
        ))
    })
    .await
    .map_err(|_| WorkerError::Timeout { step: "the agent connection and registration", after })?
}

/// The register request: room jobs under our agent name, and what the agent
/// participant may do in the room.
fn register_request(options: &WorkerOptions) -> proto::RegisterWorkerRequest {
    proto::RegisterWorkerRequest {
        r#type: proto::JobType::JtRoom as i32,
        agent_name: options.agent_name.clone(),
        version: options.version.clone(),
        ping_interval: options.ping_interval.as_secs().try_into().unwrap_or(u32::MAX),
        allowed_permissions: Some(proto::ParticipantPermission {
            can_subscribe: true,
            can_publish: true,
            can_publish_data: true,
            can_update_metadata: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Socket {
    async fn connect(base_url: &str, token: &str) -> Result<Socket, WorkerError> {
        let url = agent_url(base_url)?;
        let mut request = url.as_str().into_client_request().map_err(|e| invalid(base_url, e.to_string()))?;
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| WorkerError::Token("the token has characters not allowed in a header".into()))?;
        request.headers_mut().insert("Authorization", bearer);
        let tls = crate::tls::connector(&[])
            .map_err(|reason| WorkerError::Tls { url: base_url.to_string(), source: reason.into() })?;
        let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(tls))
            .await
            .map_err(|e| connect_error(base_url, token, e))?;
        Ok(Socket { ws })
    }

    /// Sends one message.
    pub(super) async fn send(&mut self, message: worker_message::Message) -> Result<(), WorkerError> {
        let bytes = WorkerMessage { message: Some(message) }.encode_to_vec();
        self.ws.send(Message::Binary(bytes.into())).await.map_err(|e| WorkerError::Socket(Box::new(e)))
    }

    /// The next frame; `Ok(None)` when the server closed the socket. Cancel-safe.
    pub(super) async fn recv(&mut self) -> Result<Option<Incoming>, WorkerError> {
        let frame = match self.ws.next().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(WorkerError::Socket(Box::new(e))),
            Some(Ok(frame)) => frame,
        };
        match frame {
            Message::Binary(bytes) => {
                let message = ServerMessage::decode(bytes.as_ref())?;
                Ok(Some(message.message.map_or(Incoming::Heartbeat, |m| Incoming::Message(Box::new(m)))))
            }
            Message::Close(_) => Ok(None),
            // Pings are answered by tungstenite. The server writes text (JSON)
            // only to clients that write text, which we never do.
            _ => Ok(Some(Incoming::Heartbeat)),
        }
    }

    /// Closes the socket politely, without waiting long for the server.
    pub(super) async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
    }
}

/// The `/agent` URL under `base_url`: `http(s)` maps to `ws(s)`, a path prefix is kept.
pub(super) fn agent_url(base_url: &str) -> Result<String, WorkerError> {
    let base = crate::url::websocket_base(base_url).map_err(|reason| invalid(base_url, reason))?;
    Ok(format!("{base}/agent"))
}

fn invalid(url: &str, reason: impl Into<String>) -> WorkerError {
    WorkerError::InvalidUrl { url: url.to_string(), reason: reason.into() }
}

/// Turns a failed WebSocket handshake into the error an operator can act on.
/// The server quotes a refused token in its answer; it is cut out of the message.
fn connect_error(url: &str, token: &str, e: tungstenite::Error) -> WorkerError {
    use crate::tls::Handshake;
    match crate::tls::handshake(e, Some(token)) {
        Handshake::Unauthorized(why) => WorkerError::Unauthorized(why),
        Handshake::Rejected { status, body } => WorkerError::Rejected { status, body },
        Handshake::InvalidUrl(reason) => invalid(url, reason),
        Handshake::Tls(source) => WorkerError::Tls { url: url.to_string(), source },
        Handshake::Unreachable(source) => WorkerError::Unreachable { url: url.to_string(), source },
        Handshake::Other(source) => WorkerError::Handshake { url: url.to_string(), source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_url_maps_http_and_keeps_a_path_prefix() {
        assert_eq!(agent_url("http://127.0.0.1:7880/").unwrap(), "ws://127.0.0.1:7880/agent");
        assert_eq!(agent_url("wss://lk.example.com/base?x=1").unwrap(), "wss://lk.example.com/base/agent");
        assert!(matches!(agent_url("127.0.0.1:7880"), Err(WorkerError::InvalidUrl { .. })));
        assert!(matches!(agent_url("ftp://host"), Err(WorkerError::InvalidUrl { .. })));
    }
}
