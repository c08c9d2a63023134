//! `mindbot-agent` as a library: the MindBot LiveKit agent worker's service,
//! reachable from tests without starting a process. The binary (`main.rs`)
//! parses the command line and calls [`cli`].
//!
//! Modules, in the order a session meets them: [`config`] (settings),
//! [`supervisor`] (the worker and the API node, told from outside when to
//! drain and stop), [`cli`] (the operator commands, and the OS signals wired
//! into the supervisor), [`session`] (one job; [`refusal`]: why one is
//! refused, the same codes for the worker and the API; [`handshake`]: when
//! the user's client can hear it start), [`voice`] (the agent
//! hears and speaks), [`conventions`] (what LiveKit's frontends read: agent
//! state, transcriptions, typed turns), [`http`] (operator endpoints),
//! [`api`] (the public API under `/v1`), [`usage`] (what sessions used of the
//! voice providers, and its report), [`bench`] (benchmarks that print
//! figures), [`telemetry`] (logs).
//!
//! The LiveKit side (rooms, the worker protocol) is the `mindbot-transport`
//! crate, which knows nothing of billing or personas.

pub mod api;
pub mod bench;
pub mod cli;
pub mod config;
pub mod conventions;
pub mod demo;
pub mod handshake;
pub mod http;
pub mod jobs;
pub mod redispatch;
pub mod refusal;
pub mod session;
pub mod supervisor;
pub mod telemetry;
pub mod usage;
pub mod voice;
