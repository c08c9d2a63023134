//! One WebRTC peer connection: a str0m `Rtc` and the UDP socket it owns.
//!
//! str0m is sans-IO: this file is its I/O. It binds one UDP socket on the
//! interface that routes to the LiveKit server, offers that address as the
//! only (host) candidate, feeds received datagrams and timeouts in, and sends
//! what str0m wants sent. LiveKit's server is ICE-lite with public
//! candidates, so a host candidate is enough for it to find us; there is no
//! STUN or TURN client here. Which SDP to exchange is the engine's business.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use livekit_protocol::SignalTarget;
use serde::{Deserialize, Serialize};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;

use crate::room::RoomError;

/// Largest datagram we expect (WebRTC keeps packets under the path MTU).
pub(crate) const MAX_DATAGRAM: usize = 2000;

/// A peer connection and its socket.
pub(crate) struct Peer {
    pub(crate) rtc: Rtc,
    pub(crate) socket: UdpSocket,
    local: SocketAddr,
    /// Which of LiveKit's two connections this is (for trickle and logs).
    pub(crate) target: SignalTarget,
    /// When str0m next wants `Input::Timeout`.
    pub(crate) next_timeout: Instant,
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
    /// Binds a socket on `local_ip` and builds an `Rtc` for Opus audio and data channels.
    pub(crate) fn new(local_ip: IpAddr, target: SignalTarget, now: Instant) -> Result<Self, RoomError> {
        let std_socket = std::net::UdpSocket::bind((local_ip, 0))
            .and_then(|s| s.set_nonblocking(true).map(|_| s))
            .map_err(|e| RoomError::Rtc(format!("binding a UDP socket on {local_ip}: {e}")))?;
        let local = std_socket.local_addr().map_err(|e| RoomError::Rtc(e.to_string()))?;
        let socket = UdpSocket::from_std(std_socket).map_err(|e| RoomError::Rtc(e.to_string()))?;
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            // Stats events cost work on every tick and nobody reads them.
            .set_stats_interval(None)
            .build(now);
        let candidate = Candidate::host(local, Protocol::Udp).map_err(|e| RoomError::Rtc(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        Ok(Peer { rtc, socket, local, target, next_timeout: now })
    }

    /// Our candidate as LiveKit's trickle JSON.
    pub(crate) fn local_candidate_json(&self) -> String {
        // The host candidate is built from our own socket address, so it is valid.
        let candidate = Candidate::host(self.local, Protocol::Udp).map(|c| c.to_sdp_string()).unwrap_or_default();
        let init = CandidateInit { candidate, sdp_mid: Some("0".into()), sdp_m_line_index: Some(0) };
        serde_json::to_string(&init).unwrap_or_default()
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
            Ok(c) if c.proto() == Protocol::Udp => self.rtc.add_remote_candidate(c),
            Ok(_) => {}
            Err(e) => tracing::debug!(target_pc = ?self.target, error = %e, line, "unparsable candidate"),
        }
    }

    /// Feeds one received datagram to str0m.
    pub(crate) fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        let Ok(receive) = Receive::new(Protocol::Udp, source, self.local, data) else {
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
        Ok(())
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
                    return Ok(None);
                }
                Output::Transmit(t) => {
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
        let peer = Peer::new(IpAddr::from([127, 0, 0, 1]), SignalTarget::Publisher, now).unwrap();
        let json = peer.local_candidate_json();
        let init: CandidateInit = serde_json::from_str(&json).unwrap();
        let c = Candidate::from_sdp_string(&init.candidate).unwrap();
        assert_eq!(c.addr(), peer.local);
        assert!(json.contains("\"sdpMLineIndex\":0"), "{json}");
    }
}
