//! The transport's integration tests, one binary: rooms and the agent worker
//! protocol against the real LiveKit server (the dev server the scripts
//! start, or private ones on the tests' own ports), with the Python SDK as
//! the other participant, over TLS and through TURN. LiveKit servers,
//! tokens and the server API come from the test kit (`mindbot-tests`).

mod support;
mod worker_support;

mod room;
mod room_python;
mod room_tls;
mod room_turn;
mod worker;
