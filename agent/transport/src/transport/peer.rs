//! One WebRTC peer connection: a str0m `Rtc` and the UDP socket it owns.
//!
//! str0m is sans-IO: this file is its I/O. It binds one UDP socket on the
//! interface that routes to the LiveKit server, offers that address (host
//! candidate) plus what `gather.rs` found (server-reflexive, relayed), feeds
//! received datagrams and timeouts in, and sends what str0m wants sent.
//! Packets of the relayed candidate go through the TURN allocation
//! (`relay.rs`) on the same socket. Which SDP to exchange is the engine's
//! business.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use livekit_protocol::SignalTarget;
use serde::{Deserialize, Serialize};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;

use crate::ice::gather::Gathered;
use crate::ice::relay::Relay;
use crate::ice::{IcePolicy, MAX_DATAGRAM};
use crate::room::RoomError;

/// A peer connection and its socket.
pub(crate) struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    /// Where `recv` puts the next datagram.
    buf: Vec<u8>,
    /// Our candidates, as trickled to the server.
    candidates: Vec<Candidate>,
    /// The TURN allocation behind our relayed candidate, if any.
    relay: Option<Relay>,
    /// Datagrams for the TURN server, reused between calls.
    relay_out: Vec<Vec<u8>>,
    /// Which of LiveKit's two connections this is (for trickle and logs).
    target: SignalTarget,
    /// When str0m next wants `Input::Timeout`.
    next_timeout: Instant,
}

/// The JSON LiveKit puts in `TrickleRequest.candidate_init` (the browser's
/// `RTCIceCandidateInit`).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CandidateInit {
    candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sdp_mid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "sdpMLineIndex")]
    sdp_m_line_index: Option<u32>,
}

impl Peer {
    /// Binds a socket on `local_ip` and builds an `Rtc` for Opus audio and
    /// data channels; the host candidate is offered unless `policy` is relay-only.
    pub(crate) fn new(
        local_ip: IpAddr,
        target: SignalTarget,
        policy: IcePolicy,
        now: Instant,
    ) -> Result<Self, RoomError> {
        let std_socket = std::net::UdpSocket::bind((local_ip, 0))
            .and_then(|s| s.set_nonblocking(true).map(|_| s))
            .map_err(|source| RoomError::Socket { ip: local_ip, source })?;
        let local = std_socket.local_addr().map_err(|source| RoomError::Socket { ip: local_ip, source })?;
        let socket = UdpSocket::from_std(std_socket).map_err(|source| RoomError::Socket { ip: local_ip, source })?;
        let rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            // Stats events cost work on every tick and nobody reads them.
            .set_stats_interval(None)
            // Each audio packet goes out as it arrives. LiveKit reuses a
            // section for a later track (a user who left and joined again),
            // and str0m's reordering buffer is the section's, not the
            // stream's: it dropped every packet of the new track whose
            // sequence numbers started below the old one's last, so about
            // every other return went unheard. An Opus packet is a whole
            // frame; the decoder conceals a gap.
            .set_reordering_size_audio(0)
            .build(now);
        let mut peer = Peer {
            rtc,
            socket,
            local,
            buf: vec![0; MAX_DATAGRAM],
            candidates: Vec::new(),
            relay: None,
            relay_out: Vec::new(),
            target,
            next_timeout: now,
        };
        if policy == IcePolicy::All {
            peer.add_local(Candidate::host(local, Protocol::Udp))?;
        }
        Ok(peer)
    }

    /// The UDP socket's address (our host candidate).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The UDP socket, for gathering candidates on it before the engine runs.
    pub(crate) fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// The str0m connection, for SDP, data channels and media writers.
    pub(crate) fn rtc(&mut self) -> &mut Rtc {
        &mut self.rtc
    }

    /// When `handle_timeout` next has work.
    pub(crate) fn next_timeout(&self) -> Instant {
        self.next_timeout
    }

    /// Waits for the next datagram on the socket; cancel-safe, so it can sit
    /// in a `select!`. Hand the result to `handle_received`.
    pub(crate) async fn recv(&mut self) -> std::io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(&mut self.buf).await
    }

    /// Feeds the datagram `recv` returned (`n` bytes from `source`) to str0m.
    pub(crate) fn handle_received(&mut self, now: Instant, received: std::io::Result<(usize, SocketAddr)>) {
        let Ok((n, source)) = received else { return };
        let buf = std::mem::take(&mut self.buf);
        self.handle_datagram(now, source, &buf[..n]);
        self.buf = buf;
    }

    fn add_local(&mut self, candidate: Result<Candidate, str0m::error::IceError>) -> Result<(), RoomError> {
        let candidate = candidate?;
        if let Some(added) = self.rtc.add_local_candidate(candidate) {
            self.candidates.push(added.clone());
        }
        Ok(())
    }

    /// Adds what gathering found: reflexive addresses (unless relay-only) and the relay.
    pub(crate) fn add_gathered(&mut self, gathered: Gathered, policy: IcePolicy) -> Result<(), RoomError> {
        if policy == IcePolicy::All {
            // A reflexive address equal to our socket's (no NAT) adds nothing.
            let local = self.local;
            for addr in gathered.reflexive.into_iter().filter(|a| *a != local) {
                self.add_local(Candidate::server_reflexive(addr, self.local, Protocol::Udp))?;
            }
        }
        if let Some(relay) = gathered.relay {
            self.add_local(Candidate::relayed(relay.relayed, self.local, Protocol::Udp))?;
            self.relay = Some(relay);
        }
        if self.candidates.is_empty() {
            return Err(RoomError::NoRelay);
        }
        tracing::debug!(target_pc = ?self.target, candidates = ?self.candidates, "local candidates");
        Ok(())
    }

    /// Our candidates as LiveKit's trickle JSON.
    pub(crate) fn local_candidates_json(&self) -> Vec<String> {
        let json = |c: &Candidate| {
            let init =
                CandidateInit { candidate: c.to_sdp_string(), sdp_mid: Some("0".into()), sdp_m_line_index: Some(0) };
            serde_json::to_string(&init).unwrap_or_default()
        };
        self.candidates.iter().map(json).collect()
    }

    /// Adds a candidate trickled by the server (`candidate_init` JSON).
    pub(crate) fn add_remote_candidate_json(&mut self, json: &str) {
        let init: CandidateInit = match serde_json::from_str(json) {
            Ok(init) => init,
            Err(e) => {
                tracing::debug!(target_pc = ?self.target, error = %e, "unreadable trickle candidate");
                return;
            }
        };
        if init.candidate.is_empty() {
            return; // end-of-candidates marker
        }
        let line = init.candidate.strip_prefix("a=").unwrap_or(&init.candidate);
        match Candidate::from_sdp_string(line) {
            // Only UDP pairs with our UDP socket; str0m ignores the rest anyway.
            Ok(c) if c.proto() == Protocol::Udp => {
                if let Some(relay) = self.relay.as_mut() {
                    relay.permit(Instant::now(), c.addr().ip(), &mut self.relay_out);
                    self.flush_relay();
                }
                self.rtc.add_remote_candidate(c);
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(target_pc = ?self.target, error = %e, line, "unparsable candidate"),
        }
    }

    /// Feeds one received datagram to str0m.
    fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        if let Some(relay) = self.relay.as_mut().filter(|r| r.server == source) {
            let relayed = relay.relayed;
            let unwrapped = relay.handle_datagram(now, data, &mut self.relay_out);
            self.flush_relay();
            if let Some((peer, payload)) = unwrapped {
                tracing::trace!(%peer, len = payload.len(), "TURN data");
                self.receive(now, peer, relayed, &payload);
            }
            return;
        }
        self.receive(now, source, self.local, data);
    }

    fn receive(&mut self, now: Instant, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        let Ok(receive) = Receive::new(Protocol::Udp, source, destination, data) else {
            return; // not STUN/DTLS/RTP: ignore
        };
        let input = Input::Receive(now, receive);
        if self.rtc.accepts(&input) {
            if let Err(e) = self.rtc.handle_input(input) {
                tracing::debug!(target_pc = ?self.target, error = %e, "str0m rejected a datagram");
            }
        }
    }

    /// Tells str0m the time has come, if it has.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Result<(), RoomError> {
        if now >= self.next_timeout {
            self.rtc.handle_input(Input::Timeout(now))?;
        }
        if let Some(relay) = self.relay.as_mut().filter(|r| now >= r.next_timeout()) {
            relay.handle_timeout(now, &mut self.relay_out);
            self.flush_relay();
        }
        Ok(())
    }

    /// Sends what the relay queued to its TURN server.
    fn flush_relay(&mut self) {
        let Some(server) = self.relay.as_ref().map(|r| r.server) else { return };
        for datagram in self.relay_out.drain(..) {
            if let Err(e) = self.socket.try_send_to(&datagram, server) {
                tracing::trace!(target_pc = ?self.target, error = %e, "UDP send to TURN dropped");
            }
        }
    }

    /// The next event str0m has, sending any datagrams it queued on the way.
    /// `None` once str0m only has a timeout left (stored in `next_timeout`).
    pub(crate) fn poll_event(&mut self) -> Result<Option<Event>, RoomError> {
        // A timeout already due is handled here rather than after a trip through
        // the runtime (the pacer releases a just-written packet this way), a few
        // times at most: a closed Rtc may ask for "now" forever.
        let mut due_now = 0;
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(at) => {
                    let now = Instant::now();
                    if at <= now && due_now < 4 {
                        due_now += 1;
                        self.rtc.handle_input(Input::Timeout(now))?;
                        continue;
                    }
                    self.next_timeout = at.max(now + Duration::from_millis(1));
                    if let Some(relay) = &self.relay {
                        self.next_timeout = self.next_timeout.min(relay.next_timeout());
                    }
                    return Ok(None);
                }
                Output::Transmit(t) => {
                    if let Some(relay) = self.relay.as_mut().filter(|r| r.relayed == t.source) {
                        relay.wrap(Instant::now(), t.destination, &t.contents, &mut self.relay_out);
                        self.flush_relay();
                        continue;
                    }
                    // UDP may drop; a full socket buffer is the same as a lost packet.
                    if let Err(e) = self.socket.try_send_to(&t.contents, t.destination) {
                        tracing::trace!(target_pc = ?self.target, error = %e, "UDP send dropped");
                    }
                }
                Output::Event(event) => return Ok(Some(event)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trickle_json_round_trips_a_host_candidate() {
        let now = Instant::now();
        let peer = Peer::new(IpAddr::from([127, 0, 0, 1]), SignalTarget::Publisher, IcePolicy::All, now).unwrap();
        let json = peer.local_candidates_json().remove(0);
        let init: CandidateInit = serde_json::from_str(&json).unwrap();
        let c = Candidate::from_sdp_string(&init.candidate).unwrap();
        assert_eq!(c.addr(), peer.local);
        assert!(json.contains("\"sdpMLineIndex\":0"), "{json}");
    }

    #[tokio::test]
    async fn a_socket_on_an_address_we_do_not_have_names_it_and_keeps_the_os_error() {
        let ip = IpAddr::from([192, 0, 2, 1]); // TEST-NET-1: never one of ours
        let err = Peer::new(ip, SignalTarget::Subscriber, IcePolicy::All, Instant::now()).err().unwrap();
        assert!(matches!(&err, RoomError::Socket { ip: got, .. } if *got == ip), "{err}");
        assert!(err.to_string().contains("192.0.2.1"), "{err}");
        let source = std::error::Error::source(&err).expect("the OS error as source");
        assert!(source.downcast_ref::<std::io::Error>().is_some(), "{source:?}");
    }

    #[tokio::test]
    async fn relay_only_without_a_relay_is_refused_for_want_of_a_candidate() {
        let local = IpAddr::from([127, 0, 0, 1]);
        let mut peer = Peer::new(local, SignalTarget::Publisher, IcePolicy::RelayOnly, Instant::now()).unwrap();
        assert!(peer.local_candidates_json().is_empty(), "no host candidate with relay-only");
        let err = peer.add_gathered(Gathered::default(), IcePolicy::RelayOnly).err().unwrap();
        assert!(matches!(err, RoomError::NoRelay), "{err}");
    }
}
