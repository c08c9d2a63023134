//! The parts of the worker that talk to LiveKit, as a library so that the
//! binary and the end-to-end tests drive the same code:
//! - [`room`]: the agent's seat in a room (signaling, WebRTC, data, Opus audio);
//! - [`worker`]: LiveKit's agent-worker protocol (registration, job offers,
//!   assignments, status);
//! - [`url`]: the server's address as the sockets and the server API need it.
//!
//! Neither knows about billing or personas; the binary wires them to the
//! `metering` and `personas` crates.

pub mod room;
mod tls;
pub mod url;
pub mod worker;

pub use tls::client_config as tls_client_config;
