//! What can go wrong with the worker connection, named for the cause.
//!
//! The first connection fails fast with one of these so an operator can act
//! on the message alone (wrong URL, server down, key refused). Later losses
//! are retried by the worker; only when it gives up does the owner see
//! [`WorkerError::ConnectionLost`].

use std::time::Duration;

/// An error from the agent worker connection.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A setting in `WorkerOptions` cannot work.
    #[error("invalid worker options: {0}")]
    InvalidOptions(String),
    /// The LiveKit URL could not be used (scheme, host, TLS support).
    #[error("invalid LiveKit URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// TLS with the server failed (an untrusted certificate, a wrong name...).
    #[error("TLS with {url} failed (is the server's certificate trusted?): {source}")]
    Tls {
        url: String,
        #[source]
        source: crate::tls::TlsSource,
    },
    /// Nothing answered at the URL (connection refused, DNS, network).
    #[error("LiveKit server unreachable at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: std::io::Error,
    },
    /// The server refused the worker token (HTTP 401/403 on `/agent`): wrong key or secret.
    #[error("LiveKit rejected the worker token: {0}")]
    Unauthorized(String),
    /// The server answered the WebSocket request with another HTTP status (a wrong path gives 404).
    #[error("LiveKit refused the agent connection with HTTP {status}: {body}")]
    Rejected { status: u16, body: String },
    /// A step of connecting did not finish within its deadline.
    #[error("timed out after {after:?} waiting for {step}")]
    Timeout { step: &'static str, after: Duration },
    /// The caller's token function failed.
    #[error("could not sign the worker token: {0}")]
    Token(String),
    /// The server sent something the protocol does not allow here.
    #[error("agent protocol error: {0}")]
    Protocol(String),
    /// A server frame was not an agent-protocol message.
    #[error("agent protocol error: undecodable server message: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The WebSocket's handshake failed in a way none of the above names.
    #[error("agent connection failed: handshake with {url}: {source}")]
    Handshake {
        url: String,
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    /// The WebSocket failed after it was open.
    #[error("agent connection failed: {0}")]
    Socket(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    /// The connection dropped and every reconnect attempt failed.
    #[error("lost the LiveKit agent connection; {attempts} reconnect attempts failed, the last with: {last}")]
    ConnectionLost { attempts: u32, last: String },
    /// The worker has stopped; the call came after shutdown or a fatal error.
    #[error("the worker has stopped")]
    Stopped,
}
