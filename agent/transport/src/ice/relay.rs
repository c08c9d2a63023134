//! A TURN allocation in use (RFC 5766/8656 over UDP): what a relayed
//! candidate's packets go through once `gather.rs` has allocated it.
//!
//! It wraps outgoing packets in Send indications, unwraps Data indications,
//! installs permissions for the peers we send to and refreshes the
//! allocation and permissions before they expire. It does no I/O itself:
//! it returns datagrams for the peer's socket to send to the TURN server.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::ice::stun::{self, Builder, Class, Method, TxId};

/// Permissions last 300 s (RFC 5766 §8); renew well before.
const PERMISSION_RENEW: Duration = Duration::from_secs(240);
/// A permission request unanswered this long is sent again.
const PERMISSION_RETRY: Duration = Duration::from_secs(1);
/// Packets held while their peer's permission is being installed.
const HELD_PACKETS: usize = 32;

/// Long-term credentials as the server last accepted them.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) realm: String,
    pub(crate) nonce: Vec<u8>,
}

impl Credentials {
    fn key(&self) -> [u8; 16] {
        stun::long_term_key(&self.username, &self.realm, &self.password)
    }

    /// Signs a request with USERNAME, REALM and NONCE.
    pub(crate) fn sign(&self, builder: Builder) -> Vec<u8> {
        builder.username(&self.username).realm(&self.realm).nonce(&self.nonce).sign(&self.key())
    }
}

/// What an in-flight request was for, so a stale nonce can repeat it.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Refresh,
    Permission(IpAddr),
}

/// One allocation on one TURN server.
#[derive(Debug)]
pub(crate) struct Relay {
    /// The TURN server's address (where our socket sends).
    pub(crate) server: SocketAddr,
    /// The relayed address peers see: our relayed candidate.
    pub(crate) relayed: SocketAddr,
    credentials: Credentials,
    lifetime: Duration,
    refresh_at: Instant,
    /// Per peer IP: when the permission needs renewing (`None` until first
    /// granted) and when it was last asked for.
    permissions: HashMap<IpAddr, (Option<Instant>, Instant)>,
    pending: HashMap<TxId, Pending>,
    /// Packets for peers whose permission is on its way: the server would
    /// drop them, and ICE's retransmission backoff would cost seconds.
    held: Vec<(SocketAddr, Vec<u8>)>,
}

impl Relay {
    pub(crate) fn new(
        server: SocketAddr,
        relayed: SocketAddr,
        credentials: Credentials,
        lifetime: Duration,
        now: Instant,
    ) -> Self {
        Relay {
            server,
            relayed,
            credentials,
            lifetime,
            refresh_at: now + refresh_after(lifetime),
            permissions: HashMap::new(),
            pending: HashMap::new(),
            held: Vec::new(),
        }
    }

    /// When `handle_timeout` next has work.
    pub(crate) fn next_timeout(&self) -> Instant {
        let renewals = self.permissions.values().filter_map(|(renew, _)| *renew);
        renewals.fold(self.refresh_at, Instant::min)
    }

    /// Wraps `data` for `peer` in a Send indication; while the peer's IP has
    /// no permission yet, asks for one and holds the packet until it comes.
    pub(crate) fn wrap(&mut self, now: Instant, peer: SocketAddr, data: &[u8], out: &mut Vec<Vec<u8>>) {
        if peer.is_ipv4() != self.relayed.is_ipv4() {
            return; // unreachable through this relay
        }
        if !matches!(self.permissions.get(&peer.ip()), Some((Some(_), _))) {
            self.permit(now, peer.ip(), out);
            if self.held.len() < HELD_PACKETS {
                self.held.push((peer, data.to_vec()));
            }
            return;
        }
        out.push(send_indication(peer, data));
    }

    /// Asks for a permission for `ip` unless one is installed or was just asked for.
    pub(crate) fn permit(&mut self, now: Instant, ip: IpAddr, out: &mut Vec<Vec<u8>>) {
        if ip.is_ipv4() != self.relayed.is_ipv4() {
            return; // a relay reaches peers of its own address family only
        }
        match self.permissions.get(&ip) {
            Some((Some(_), _)) => return,
            Some((None, asked)) if now < *asked + PERMISSION_RETRY => return,
            _ => {}
        }
        self.permissions.insert(ip, (None, now));
        out.push(self.request(Pending::Permission(ip)));
    }

    fn request(&mut self, what: Pending) -> Vec<u8> {
        let tx = stun::new_tx_id();
        self.pending.insert(tx, what);
        let builder = match what {
            Pending::Refresh => {
                Builder::new(Method::Refresh, Class::Request, &tx).lifetime(self.lifetime.as_secs() as u32)
            }
            Pending::Permission(ip) => {
                Builder::new(Method::CreatePermission, Class::Request, &tx).peer(SocketAddr::new(ip, 0))
            }
        };
        self.credentials.sign(builder)
    }

    /// Refreshes the allocation and renews permissions that are due.
    pub(crate) fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        if now >= self.refresh_at {
            // Try again in a second if the answer does not move the deadline.
            self.refresh_at = now + Duration::from_secs(1);
            out.push(self.request(Pending::Refresh));
        }
        let due: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|(_, (renew, _))| renew.is_some_and(|r| now >= r))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in due {
            // The permission still holds while renewing; ask again in a second if unanswered.
            self.permissions.insert(ip, (Some(now + PERMISSION_RETRY), now));
            out.push(self.request(Pending::Permission(ip)));
        }
    }

    /// Handles a datagram from the TURN server: returns the peer and payload
    /// of a Data indication; answers to our requests update state (and a stale
    /// nonce repeats the request into `out`).
    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        bytes: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) -> Option<(SocketAddr, Vec<u8>)> {
        let message = stun::parse(bytes)?;
        if message.is(Method::Data, Class::Indication) {
            return Some((message.peer?, message.data?));
        }
        let what = self.pending.remove(&message.tx)?;
        tracing::trace!(?what, class = ?message.class, code = ?message.error_code, "TURN answer");
        match (message.class, what) {
            (Some(Class::Success), Pending::Refresh) => {
                self.lifetime = Duration::from_secs(message.lifetime.unwrap_or(600).into());
                self.refresh_at = now + refresh_after(self.lifetime);
            }
            (Some(Class::Success), Pending::Permission(ip)) => {
                self.permissions.insert(ip, (Some(now + PERMISSION_RENEW), now));
                let (ready, still): (Vec<_>, Vec<_>) = self.held.drain(..).partition(|(peer, _)| peer.ip() == ip);
                self.held = still;
                out.extend(ready.iter().map(|(peer, data)| send_indication(*peer, data)));
            }
            (Some(Class::Error), what) if message.error_code == Some(438) => {
                // Stale nonce: take the new one and ask again.
                if let Some(nonce) = message.nonce {
                    self.credentials.nonce = nonce;
                    out.push(self.request(what));
                }
            }
            (_, what) => {
                tracing::debug!(?what, code = ?message.error_code, server = %self.server, "TURN request refused")
            }
        }
        None
    }
}

fn send_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    Builder::new(Method::Send, Class::Indication, &stun::new_tx_id()).peer(peer).data(data).finish()
}

/// Refresh a minute before expiry, or at half of a short lifetime.
fn refresh_after(lifetime: Duration) -> Duration {
    if lifetime > Duration::from_secs(120) {
        lifetime - Duration::from_secs(60)
    } else {
        lifetime / 2
    }
}
