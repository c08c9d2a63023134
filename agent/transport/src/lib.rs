//! A LiveKit room participant and agent worker in pure Rust, without
//! libwebrtc: signaling over WebSocket, WebRTC through str0m (sans-IO),
//! Opus audio. `README.md` beside this crate has usage, limits and tests.
//!
//! Public:
//! - [`room`]: a seat in a room ([`room::connect`], [`room::Room`],
//!   [`room::RoomEvents`]): data packets and text streams, Opus audio in
//!   and out, participants and tracks, resume after a dropped signal;
//! - [`worker`]: LiveKit's agent-worker protocol (registration, job offers,
//!   assignments, status);
//! - [`url`]: the server's address as the sockets and the server API need it;
//! - [`tls_client_config`]: the rustls settings every TLS client here uses.
//!
//! Inside, three layers, each using only the ones below it:
//! - `room` (with `room::engine`, the one task that runs a participant);
//! - `transport`: the signaling WebSocket and the WebRTC peer connections;
//! - `ice`: STUN and TURN, which str0m leaves to us.
//!
//! Nothing here knows about billing or personas: `mindbot-agent` wires it to
//! the `metering` and `personas` crates.

mod ice;
pub mod room;
mod tls;
mod transport;
pub mod url;
pub mod worker;

pub use tls::client_config as tls_client_config;
