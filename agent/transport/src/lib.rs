//! A LiveKit room participant and agent worker in pure Rust, without
//! libwebrtc: signaling over WebSocket, WebRTC through str0m (sans-IO),
//! Opus audio.
//! - [`room`]: a seat in a room (signaling, ICE, DTLS/SCTP, data packets and
//!   text streams, Opus audio in and out);
//! - [`worker`]: LiveKit's agent-worker protocol (registration, job offers,
//!   assignments, status);
//! - [`url`]: the server's address as the sockets and the server API need it.
//!
//! Nothing here knows about billing or personas: `mindbot-agent` wires it to
//! the `metering` and `personas` crates.

pub mod room;
mod tls;
pub mod url;
pub mod worker;

pub use tls::client_config as tls_client_config;
