//! The two connections a LiveKit participant keeps with its server, below
//! the room: the signaling WebSocket ([`signal`]) and a WebRTC peer
//! connection with its UDP socket ([`peer`]; LiveKit uses two, subscriber
//! and publisher).
//!
//! Each moves bytes and reports what arrived; neither knows what a room,
//! a participant or a track is. Which messages to send, which SDP to
//! exchange and what events mean is the room engine's business
//! (`room::engine`). Candidates other than the host address come from
//! `ice`.
//!
//! # Why str0m
//! The WebRTC stack is `str0m` (sans-IO): each participant is one tokio task
//! owning two `Rtc` values and two UDP sockets, with no task or thread per
//! connection, transport or timer, so its cost is the packets it handles.
//! webrtc-rs 0.17 (the pion-like API) was not tried within the time-boxed
//! spike: str0m passed it first, and webrtc-rs runs a set of tasks, buffers
//! and timers per peer connection (ICE agent, DTLS, SCTP, interceptors),
//! the kind of fixed cost the 5 MB / 1% per participant target is about.
//! The price of str0m: it has no STUN/TURN client, so we carry a small one
//! (`ice`). str0m 0.24 is used because 0.25's crypto back-ends other than
//! aws-lc-rs are not published; 0.24 with aws-lc-rs also keeps the
//! workspace's Rust 1.85. `wss://` signaling runs on rustls with the same
//! aws-lc-rs provider.

pub(crate) mod peer;
pub(crate) mod signal;
