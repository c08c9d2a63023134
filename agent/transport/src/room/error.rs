//! What can go wrong when joining or using a room, named for the cause.
//!
//! Connection errors say which step failed (URL, server reachable, token
//! accepted, media path up) so an operator can act on the message alone.
//! Nothing here is retried: the caller decides.

use std::time::Duration;

use tokio_tungstenite::tungstenite;

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
    #[error("TLS with {url} failed (is the server's certificate trusted?): {source}")]
    Tls {
        url: String,
        #[source]
        source: crate::tls::TlsSource,
    },
    /// The server refused the token (HTTP 401 on /rtc).
    #[error("LiveKit rejected the token: {0}")]
    Unauthorized(String),
    /// The server answered the signaling request with another HTTP error.
    #[error("LiveKit signaling refused with HTTP {status}: {body}")]
    Rejected { status: u16, body: String },
    /// A step did not finish within its deadline.
    #[error("timed out after {after:?} waiting for {step}")]
    Timeout { step: &'static str, after: Duration },
    /// The signaling protocol went wrong: a message missing or out of place.
    #[error("signaling failed: {0}")]
    Signal(String),
    /// The signaling WebSocket's handshake failed in a way none of the above names.
    #[error("signaling failed: handshake with {url}: {source}")]
    Handshake {
        url: String,
        #[source]
        source: Box<tungstenite::Error>,
    },
    /// The signaling WebSocket failed once open.
    #[error("signaling failed: {0}")]
    SignalSocket(#[source] Box<tungstenite::Error>),
    /// A signaling frame was not a LiveKit message.
    #[error("signaling failed: bad frame: {0}")]
    SignalFrame(#[from] prost::DecodeError),
    /// Our end of the signaling connection has no address to bind media on.
    #[error("signaling failed: signaling socket: {0}")]
    LocalAddress(#[source] std::io::Error),
    /// The task resuming the signaling connection panicked or was cancelled.
    #[error("signaling failed: resume task: {0}")]
    ResumeTask(#[source] tokio::task::JoinError),
    /// The server told us to leave before the join completed.
    #[error("the server refused the join: {0:?}")]
    JoinRefused(crate::room::DisconnectReason),
    /// The WebRTC stack (ICE, DTLS, SCTP, RTP) failed.
    #[error("WebRTC failed: {0}")]
    Rtc(#[from] str0m::RtcError),
    /// An SDP from the server could not be read or applied.
    #[error("WebRTC failed: SDP: {0}")]
    Sdp(#[from] str0m::error::SdpError),
    /// A local ICE candidate could not be made.
    #[error("WebRTC failed: local candidate: {0}")]
    Candidate(#[from] str0m::error::IceError),
    /// The UDP socket for a peer connection could not be opened.
    #[error("WebRTC failed: UDP socket on {ip}: {source}")]
    Socket {
        ip: std::net::IpAddr,
        #[source]
        source: std::io::Error,
    },
    /// Relay-only was asked for and no TURN server gave a relay.
    #[error("WebRTC failed: no ICE candidate: relay-only, but no TURN server gave a relay")]
    NoRelay,
    /// A data channel is not open (yet, or any more).
    #[error("WebRTC failed: data channel not open")]
    DataChannelClosed,
    /// A data channel's send buffer is full; the packet was not sent.
    #[error("WebRTC failed: data channel buffer full")]
    DataChannelFull,
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

impl RoomError {
    /// Whether the same join may well succeed if tried again: the server
    /// or the path to it failed (unreachable, timed out, a 5xx or 429, a
    /// connection that broke, media that did not come up, a node shutting
    /// down), not the request (URL, TLS trust, token, a room that is gone).
    pub fn is_transient(&self) -> bool {
        match self {
            RoomError::Unreachable { .. }
            | RoomError::Timeout { .. }
            | RoomError::Signal(_)
            | RoomError::Handshake { .. }
            | RoomError::SignalSocket(_)
            | RoomError::Closed
            | RoomError::JoinRefused(crate::room::DisconnectReason::ServerShutdown) => true,
            RoomError::Rejected { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::DisconnectReason;

    #[test]
    fn only_failures_of_the_server_or_the_way_to_it_are_worth_a_second_join() {
        let transient = [
            RoomError::Timeout { step: "the media connection (ICE and DTLS)", after: Duration::from_secs(10) },
            RoomError::Rejected { status: 503, body: "no server available".into() },
            RoomError::Rejected { status: 429, body: String::new() },
            RoomError::JoinRefused(DisconnectReason::ServerShutdown),
            RoomError::Closed,
        ];
        for e in &transient {
            assert!(e.is_transient(), "{e}");
        }
        let lasting = [
            RoomError::Unauthorized("token expired".into()),
            RoomError::Rejected { status: 404, body: "room not found".into() },
            RoomError::JoinRefused(DisconnectReason::RoomDeleted),
            RoomError::JoinRefused(DisconnectReason::DuplicateIdentity),
            RoomError::InvalidUrl { url: "ftp://x".into(), reason: "scheme".into() },
        ];
        for e in &lasting {
            assert!(!e.is_transient(), "{e}");
        }
    }
}
