//! STUN and TURN messages on the wire (RFC 5389 framing, RFC 5766/8656
//! methods and attributes): just what our ICE gathering and relay need.
//!
//! Builds requests and indications with optional long-term-credential
//! MESSAGE-INTEGRITY and parses responses into the few attributes we read.
//! It does no I/O and keeps no state; `gather.rs` and `relay.rs` do.

use std::net::{IpAddr, SocketAddr};

const MAGIC: u32 = 0x2112_a442;
const HEADER: usize = 20;

/// STUN/TURN methods we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Binding = 0x001,
    Allocate = 0x003,
    Refresh = 0x004,
    Send = 0x006,
    Data = 0x007,
    CreatePermission = 0x008,
}

/// The class of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Request,
    Indication,
    Success,
    Error,
}

mod attr {
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const LIFETIME: u16 = 0x000d;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
}

/// A transaction id.
pub(crate) type TxId = [u8; 12];

/// A fresh random transaction id (aws-lc's generator, already in the build).
pub(crate) fn new_tx_id() -> TxId {
    let mut id = [0u8; 12];
    // The system generator does not fail in practice; a zero id would still work.
    let _ = aws_lc_rs::rand::fill(&mut id);
    id
}

/// The long-term credential key, MD5(username ":" realm ":" password).
pub(crate) fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    use md5::Digest as _;
    md5::Md5::digest(format!("{username}:{realm}:{password}").as_bytes()).into()
}

/// A message being built.
pub(crate) struct Builder {
    buf: Vec<u8>,
}

impl Builder {
    pub(crate) fn new(method: Method, class: Class, tx: &TxId) -> Self {
        let m = method as u16;
        let c = match class {
            Class::Request => 0x0000,
            Class::Indication => 0x0010,
            Class::Success => 0x0100,
            Class::Error => 0x0110,
        };
        // Method bits are split around the two class bits (RFC 5389 §6).
        let kind = (m & 0x000f) | ((m & 0x0070) << 1) | ((m & 0x0f80) << 2) | c;
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&kind.to_be_bytes());
        buf.extend_from_slice(&0u16.to_be_bytes());
        buf.extend_from_slice(&MAGIC.to_be_bytes());
        buf.extend_from_slice(tx);
        Builder { buf }
    }

    fn attribute(mut self, kind: u16, value: &[u8]) -> Self {
        self.buf.extend_from_slice(&kind.to_be_bytes());
        self.buf.extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
        self.set_length(self.buf.len() - HEADER);
        self
    }

    fn set_length(&mut self, length: usize) {
        self.buf[2..4].copy_from_slice(&(length as u16).to_be_bytes());
    }

    pub(crate) fn username(self, username: &str) -> Self {
        self.attribute(attr::USERNAME, username.as_bytes())
    }

    pub(crate) fn realm(self, realm: &str) -> Self {
        self.attribute(attr::REALM, realm.as_bytes())
    }

    pub(crate) fn nonce(self, nonce: &[u8]) -> Self {
        self.attribute(attr::NONCE, nonce)
    }

    /// REQUESTED-TRANSPORT: UDP.
    pub(crate) fn udp_transport(self) -> Self {
        self.attribute(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
    }

    pub(crate) fn lifetime(self, seconds: u32) -> Self {
        self.attribute(attr::LIFETIME, &seconds.to_be_bytes())
    }

    pub(crate) fn peer(self, addr: SocketAddr) -> Self {
        let tx: TxId = self.buf[8..HEADER].try_into().unwrap_or_default();
        self.attribute(attr::XOR_PEER_ADDRESS, &xor_address(addr, &tx))
    }

    pub(crate) fn data(self, data: &[u8]) -> Self {
        self.attribute(attr::DATA, data)
    }

    /// Appends MESSAGE-INTEGRITY with `key` and returns the message.
    pub(crate) fn sign(mut self, key: &[u8]) -> Vec<u8> {
        use aws_lc_rs::hmac;
        // The length covers the integrity attribute itself (RFC 5389 §15.4).
        self.set_length(self.buf.len() - HEADER + 24);
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key), &self.buf);
        self.attribute(attr::MESSAGE_INTEGRITY, tag.as_ref()).buf
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// The parts of a received message we read.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub(crate) method: u16,
    pub(crate) class: Option<Class>,
    pub(crate) tx: TxId,
    pub(crate) error_code: Option<u16>,
    pub(crate) realm: Option<String>,
    pub(crate) nonce: Option<Vec<u8>>,
    pub(crate) lifetime: Option<u32>,
    pub(crate) mapped: Option<SocketAddr>,
    pub(crate) relayed: Option<SocketAddr>,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) data: Option<Vec<u8>>,
}

impl Parsed {
    pub(crate) fn is(&self, method: Method, class: Class) -> bool {
        self.method == method as u16 && self.class == Some(class)
    }
}

/// Whether `bytes` looks like a STUN message (RFC 7983 demultiplexing).
pub(crate) fn is_stun(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER && bytes[0] < 4 && bytes[4..8] == MAGIC.to_be_bytes()
}

/// Parses a STUN message; `None` if it is not one.
pub(crate) fn parse(bytes: &[u8]) -> Option<Parsed> {
    if !is_stun(bytes) {
        return None;
    }
    let kind = u16::from_be_bytes([bytes[0], bytes[1]]);
    let length = u16::from_be_bytes([bytes[2], bytes[3]]) as usize;
    let body = bytes.get(HEADER..HEADER + length)?;
    let class = match kind & 0x0110 {
        0x0000 => Class::Request,
        0x0010 => Class::Indication,
        0x0100 => Class::Success,
        _ => Class::Error,
    };
    let method = (kind & 0x000f) | ((kind & 0x00e0) >> 1) | ((kind & 0x3e00) >> 2);
    let tx: TxId = bytes[8..HEADER].try_into().ok()?;
    let mut parsed = Parsed { method, class: Some(class), tx, ..Default::default() };
    let mut rest = body;
    while rest.len() >= 4 {
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        let value = rest.get(4..4 + len)?;
        match kind {
            attr::ERROR_CODE if len >= 4 => {
                parsed.error_code = Some(u16::from(value[2] & 7) * 100 + u16::from(value[3]));
            }
            attr::REALM => parsed.realm = Some(String::from_utf8_lossy(value).into_owned()),
            attr::NONCE => parsed.nonce = Some(value.to_vec()),
            attr::LIFETIME if len == 4 => parsed.lifetime = Some(u32::from_be_bytes(value.try_into().ok()?)),
            attr::XOR_MAPPED_ADDRESS => parsed.mapped = unxor_address(value, &tx),
            attr::XOR_RELAYED_ADDRESS => parsed.relayed = unxor_address(value, &tx),
            attr::XOR_PEER_ADDRESS => parsed.peer = unxor_address(value, &tx),
            attr::DATA => parsed.data = Some(value.to_vec()),
            _ => {}
        }
        rest = rest.get((4 + len).next_multiple_of(4)..).unwrap_or_default();
    }
    Some(parsed)
}

/// The XOR-*-ADDRESS value for `addr` (RFC 5389 §15.2).
fn xor_address(addr: SocketAddr, tx: &TxId) -> Vec<u8> {
    let port = addr.port() ^ (MAGIC >> 16) as u16;
    let mut out = vec![0];
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(1);
            out.extend_from_slice(&port.to_be_bytes());
            out.extend_from_slice(&(u32::from(ip) ^ MAGIC).to_be_bytes());
        }
        IpAddr::V6(ip) => {
            out.push(2);
            out.extend_from_slice(&port.to_be_bytes());
            out.extend(ip.octets().iter().zip(xor_pad(tx)).map(|(a, b)| a ^ b));
        }
    }
    out
}

fn unxor_address(value: &[u8], tx: &TxId) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]) ^ (MAGIC >> 16) as u16;
    let ip = match value.get(1)? {
        1 => IpAddr::from((u32::from_be_bytes(value.get(4..8)?.try_into().ok()?) ^ MAGIC).to_be_bytes()),
        2 => {
            let mut octets = [0u8; 16];
            for (o, (a, b)) in octets.iter_mut().zip(value.get(4..20)?.iter().zip(xor_pad(tx))) {
                *o = a ^ b;
            }
            IpAddr::from(octets)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The magic cookie followed by the transaction id: the IPv6 XOR pad.
fn xor_pad(tx: &TxId) -> [u8; 16] {
    let mut pad = [0u8; 16];
    pad[..4].copy_from_slice(&MAGIC.to_be_bytes());
    pad[4..].copy_from_slice(tx);
    pad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_indication_round_trips_peer_and_data() {
        let tx = new_tx_id();
        for peer in ["192.0.2.7:4242", "[2001:db8::9]:5000"] {
            let peer: SocketAddr = peer.parse().unwrap();
            let bytes = Builder::new(Method::Send, Class::Indication, &tx).peer(peer).data(b"hello").finish();
            let parsed = parse(&bytes).unwrap();
            assert!(parsed.is(Method::Send, Class::Indication));
            assert_eq!((parsed.peer, parsed.data.as_deref(), parsed.tx), (Some(peer), Some(&b"hello"[..]), tx));
        }
    }

    #[test]
    fn signed_requests_carry_a_valid_integrity_tag() {
        use aws_lc_rs::hmac;
        let key = long_term_key("user", "realm", "pass");
        let bytes = Builder::new(Method::Allocate, Class::Request, &new_tx_id()).udp_transport().sign(&key);
        assert_eq!(u16::from_be_bytes([bytes[2], bytes[3]]) as usize, bytes.len() - HEADER);
        let (signed, tag) = bytes.split_at(bytes.len() - 20);
        let signed = &signed[..signed.len() - 4];
        hmac::verify(&hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &key), signed, tag).unwrap();
        assert_eq!(parse(&bytes).unwrap().method, Method::Allocate as u16);
    }
}
