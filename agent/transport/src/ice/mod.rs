//! ICE candidates beyond the host address: what str0m leaves to us.
//!
//! str0m pairs candidates and runs connectivity checks, but has no STUN or
//! TURN client. Before media starts, [`gather`] asks the join response's ICE
//! servers (UDP only) for a server-reflexive address (STUN Binding) and,
//! with [`IcePolicy::RelayOnly`], a TURN relay (Allocate with long-term
//! credentials); [`relay`] then carries the relayed candidate's packets in
//! Send/Data indications, installs permissions for the server's candidates
//! and refreshes both. [`stun`] is the wire format they share. With
//! [`IcePolicy::All`] the host candidate stays, which is what a worker
//! beside LiveKit uses.
//!
//! Nothing here knows about peer connections, SDP or rooms: gathering works
//! on a bare UDP socket, the relay on bytes in and bytes out.
//!
//! # Gaps
//! - TURN over TCP or TLS (`turn:?transport=tcp`, `turns:`) and `stuns:` are
//!   skipped; only UDP servers are used. No ChannelBind (4 bytes less per
//!   packet than Send indications).
//! - A relay is allocated only for `RelayOnly`; with `All` the TURN server
//!   serves as STUN only (a relay fallback when host and reflexive fail
//!   would need gathering in the background).
//! - Gathering happens once, at join, before media starts: up to 1 s with
//!   `All` (an unanswering STUN server delays every join by that much), up
//!   to a third of the join timeout with `RelayOnly`; a resume keeps the
//!   candidates (and allocation) it had.
//! - A relay-only join takes about 2 s on the subscriber connection: the
//!   server's ICE agent (pion, controlling) waits 2 s before nominating a
//!   relayed pair (its relay acceptance wait); the publisher, where we
//!   nominate, connects at once.
//! - The relay permits the IPs of the server's candidates: a server whose
//!   packets come from another address (behind 1:1 NAT) is not reachable
//!   through it.
//! - A socket on a loopback address only uses loopback ICE servers and never
//!   resolves names (so tests stay on 127.0.0.1).

pub(crate) mod gather;
pub(crate) mod relay;
pub(crate) mod stun;

/// Largest datagram we expect (WebRTC keeps packets under the path MTU).
pub(crate) const MAX_DATAGRAM: usize = 2000;

/// Which local ICE candidates are offered to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IcePolicy {
    /// Host, server-reflexive (from the join response's STUN servers) and relayed (TURN).
    #[default]
    All,
    /// Only a TURN relay; joining fails if no TURN server gives one.
    RelayOnly,
}
