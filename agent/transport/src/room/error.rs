//! What can go wrong when joining or using a room, named for the cause.
//!
//! Connection errors say which step failed (URL, server reachable, token
//! accepted, media path up) so an operator can act on the message alone.
//! Nothing here is retried: the caller decides.

use std::time::Duration;

/// An error from the room connection.
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    /// The LiveKit URL could not be used (scheme, host, TLS support).
    #[error("invalid LiveKit URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// Nothing answered at the URL (connection refused, DNS, network).
    #[error("LiveKit server unreachable at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake for `wss://` failed (untrusted certificate, wrong name, protocol).
    #[error("TLS with {url} failed (is the server's certificate trusted?): {reason}")]
    Tls { url: String, reason: String },
    /// The server refused the token (HTTP 401 on /rtc).
    #[error("LiveKit rejected the token: {0}")]
    Unauthorized(String),
    /// The server answered the signaling request with another HTTP error.
    #[error("LiveKit signaling refused with HTTP {status}: {body}")]
    Rejected { status: u16, body: String },
    /// A step did not finish within its deadline.
    #[error("timed out after {after:?} waiting for {step}")]
    Timeout { step: &'static str, after: Duration },
    /// The signaling WebSocket failed or carried something unexpected.
    #[error("signaling failed: {0}")]
    Signal(String),
    /// The server told us to leave before the join completed.
    #[error("the server refused the join: {0:?}")]
    JoinRefused(crate::room::DisconnectReason),
    /// The WebRTC side (SDP, ICE, DTLS) failed.
    #[error("WebRTC failed: {0}")]
    Rtc(String),
    /// Opus encoder or decoder error.
    #[error("opus: {0}")]
    Codec(#[from] opus::Error),
    /// The room is closed; the call came after leave or disconnection.
    #[error("the room connection is closed")]
    Closed,
    /// The server answered a request with an error.
    #[error("the server refused the request: {0}")]
    Refused(String),
}

impl From<str0m::RtcError> for RoomError {
    fn from(e: str0m::RtcError) -> Self {
        RoomError::Rtc(e.to_string())
    }
}

impl From<str0m::error::SdpError> for RoomError {
    fn from(e: str0m::error::SdpError) -> Self {
        RoomError::Rtc(format!("SDP: {e}"))
    }
}
