//! ICE candidate gathering from the join response's ICE servers: STUN
//! binding requests for server-reflexive addresses and a TURN allocation
//! (UDP, long-term credentials) for a relayed one.
//!
//! Runs once per peer connection before the engine starts, on the peer's own
//! UDP socket, within a deadline; a server that does not answer costs that
//! deadline and nothing else. A socket on a loopback address only talks to
//! loopback servers (and never looks a name up): anything else is
//! unreachable from it anyway.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use livekit_protocol as proto;
use tokio::net::UdpSocket;

use crate::ice::relay::{Credentials, Relay};
use crate::ice::stun::{self, Builder, Class, Method, Parsed};

/// How often an unanswered request is sent again.
const RETRANSMIT: Duration = Duration::from_millis(250);
/// The allocation lifetime we ask for.
const LIFETIME_SECS: u32 = 600;

/// A STUN or TURN server we can use over UDP.
#[derive(Debug, Clone)]
pub(crate) struct IceServer {
    pub(crate) addr: SocketAddr,
    /// TURN credentials; `None` for a STUN-only server.
    pub(crate) turn: Option<(String, String)>,
}

/// What gathering found for one socket.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    pub(crate) reflexive: Vec<SocketAddr>,
    pub(crate) relay: Option<Relay>,
}

/// The usable UDP servers among `list`, resolved for a socket on `local_ip`.
pub(crate) async fn usable_servers(list: &[proto::IceServer], local_ip: IpAddr) -> Vec<IceServer> {
    let mut out = Vec::new();
    for server in list {
        for url in &server.urls {
            let Some((turn, host, port)) = parse_url(url) else {
                tracing::debug!(url, "ICE server skipped (not STUN or TURN over UDP)");
                continue;
            };
            let Some(addr) = resolve(&host, port, local_ip).await else {
                tracing::debug!(url, %local_ip, "ICE server skipped (not reachable from our socket)");
                continue;
            };
            let credentials = turn.then(|| (server.username.clone(), server.credential.clone()));
            out.push(IceServer { addr, turn: credentials });
        }
    }
    out
}

/// `stun:host[:port]` or `turn:host[:port][?transport=udp]` as (is TURN, host, port).
fn parse_url(url: &str) -> Option<(bool, String, u16)> {
    let (scheme, rest) = url.split_once(':')?;
    let turn = match scheme.to_ascii_lowercase().as_str() {
        "stun" => false,
        "turn" => true,
        _ => return None, // stuns:/turns: need TLS or DTLS
    };
    let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
    if query.split('&').any(|kv| kv.eq_ignore_ascii_case("transport=tcp")) {
        return None;
    }
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        },
    };
    let port = port.map_or(Some(3478), |p| p.parse().ok())?;
    Some((turn, host.to_string(), port))
}

async fn resolve(host: &str, port: u16, local_ip: IpAddr) -> Option<SocketAddr> {
    let fits = |a: &SocketAddr| a.is_ipv4() == local_ip.is_ipv4() && (!local_ip.is_loopback() || a.ip().is_loopback());
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, port)).filter(fits);
    }
    if local_ip.is_loopback() && !host.eq_ignore_ascii_case("localhost") {
        return None;
    }
    tokio::net::lookup_host((host, port)).await.ok()?.find(fits)
}

/// Asks each server for our reflexive address and the first TURN server for
/// a relay (when `want_relay`), on `socket`, until `deadline`.
pub(crate) async fn gather(socket: &UdpSocket, servers: &[IceServer], want_relay: bool, deadline: Instant) -> Gathered {
    let mut gathered = Gathered::default();
    // TURN first: the relay matters more than a reflexive address.
    for server in servers.iter().filter(|s| s.turn.is_some()) {
        if !want_relay || gathered.relay.is_some() {
            break;
        }
        match allocate(socket, server, deadline).await {
            Ok((relay, mapped)) => {
                tracing::debug!(server = %server.addr, relayed = %relay.relayed, "TURN allocation");
                gathered.reflexive.extend(mapped);
                gathered.relay = Some(relay);
            }
            Err(why) => tracing::warn!(server = %server.addr, why, "no TURN allocation"),
        }
    }
    for server in servers.iter().filter(|s| s.turn.is_none()) {
        let tx = stun::new_tx_id();
        let request = Builder::new(Method::Binding, Class::Request, &tx).finish();
        match transact(socket, server.addr, &request, &tx, deadline).await {
            Some(response) if response.mapped.is_some() => gathered.reflexive.extend(response.mapped),
            other => tracing::warn!(server = %server.addr, error = ?other.and_then(|r| r.error_code), "no STUN answer"),
        }
    }
    gathered.reflexive.sort();
    gathered.reflexive.dedup();
    gathered
}

/// Allocates a UDP relay: an unsigned request for the realm and nonce, then
/// the signed one (again on a stale nonce). Returns the relay and our
/// reflexive address as the server saw it.
async fn allocate(
    socket: &UdpSocket,
    server: &IceServer,
    deadline: Instant,
) -> Result<(Relay, Option<SocketAddr>), String> {
    let (username, password) = server.turn.clone().unwrap_or_default();
    let mut credentials = Credentials { username, password, realm: String::new(), nonce: Vec::new() };
    for attempt in 0..3 {
        let tx = stun::new_tx_id();
        let builder = Builder::new(Method::Allocate, Class::Request, &tx).udp_transport().lifetime(LIFETIME_SECS);
        let request = if attempt == 0 { builder.finish() } else { credentials.sign(builder) };
        let response = transact(socket, server.addr, &request, &tx, deadline).await.ok_or("no answer")?;
        match (response.class, response.error_code) {
            (Some(Class::Success), _) => {
                let relayed = response.relayed.ok_or("no XOR-RELAYED-ADDRESS in the answer")?;
                let lifetime = Duration::from_secs(response.lifetime.unwrap_or(LIFETIME_SECS).into());
                let relay = Relay::new(server.addr, relayed, credentials, lifetime, Instant::now());
                return Ok((relay, response.mapped));
            }
            (_, Some(401 | 438)) => {
                credentials.realm = response.realm.unwrap_or(credentials.realm);
                credentials.nonce = response.nonce.ok_or("a 401 without a nonce")?;
            }
            (_, code) => return Err(format!("refused with {code:?}")),
        }
    }
    Err("credentials not accepted".into())
}

/// Sends `request` until an answer with its transaction id comes from `server`.
async fn transact(
    socket: &UdpSocket,
    server: SocketAddr,
    request: &[u8],
    tx: &stun::TxId,
    deadline: Instant,
) -> Option<Parsed> {
    let mut buf = vec![0u8; crate::ice::MAX_DATAGRAM];
    while Instant::now() < deadline {
        socket.send_to(request, server).await.ok()?;
        let until = (Instant::now() + RETRANSMIT).min(deadline);
        while let Ok(received) = tokio::time::timeout_at(until.into(), socket.recv_from(&mut buf)).await {
            let Ok((n, from)) = received else { break };
            match stun::parse(&buf[..n]) {
                Some(answer) if from == server && answer.tx == *tx => return Some(answer),
                _ => {} // nothing else talks to us before the engine runs
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_server_urls_parse_to_udp_servers_only() {
        assert_eq!(parse_url("stun:stun.example.com"), Some((false, "stun.example.com".into(), 3478)));
        assert_eq!(parse_url("turn:127.0.0.1:3478?transport=udp"), Some((true, "127.0.0.1".into(), 3478)));
        assert_eq!(parse_url("turn:[::1]:5349"), Some((true, "::1".into(), 5349)));
        assert_eq!(parse_url("turn:host:443?transport=tcp"), None);
        assert_eq!(parse_url("turns:host:443?transport=tcp"), None);
    }
}
