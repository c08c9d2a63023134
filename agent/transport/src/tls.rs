//! TLS for LiveKit's WebSockets (`wss://` signaling and the agent-worker
//! socket) and the voice providers' HTTPS: rustls on the aws-lc-rs provider the WebRTC stack already builds,
//! trusting Mozilla's roots plus any the caller adds, and one reading of
//! handshake failures shared by both sockets.

use std::sync::Arc;

use tokio_tungstenite::{tungstenite, Connector};

/// A connector trusting Mozilla's roots and `extra_roots` (DER).
pub(crate) fn connector(extra_roots: &[Vec<u8>]) -> Result<Connector, String> {
    Ok(Connector::Rustls(Arc::new(client_config(extra_roots)?)))
}

/// The rustls client settings every TLS connection of the worker uses
/// (LiveKit's sockets, the voice providers' HTTPS): Mozilla's roots plus
/// `extra_roots` (DER), on aws-lc-rs.
pub fn client_config(extra_roots: &[Vec<u8>]) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    for der in extra_roots {
        roots.add(der.clone().into()).map_err(|e| format!("an extra root certificate: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// Why TLS failed: rustls's error (as the socket carried it), or our own
/// settings' description of what was wrong with them.
pub(crate) type TlsSource = Box<dyn std::error::Error + Send + Sync>;

/// What a failed WebSocket handshake with LiveKit means, whichever socket
/// (room signaling or the agent worker) it was.
pub(crate) enum Handshake {
    /// HTTP 401/403: the token was refused (the server's words, or the status).
    Unauthorized(String),
    /// Another HTTP answer instead of an upgrade.
    Rejected { status: u16, body: String },
    /// The URL cannot work (scheme, host; a `ws://` server behind `wss://`).
    InvalidUrl(String),
    /// TLS failed: an untrusted certificate, a wrong name...
    Tls(TlsSource),
    /// Nothing answered.
    Unreachable(std::io::Error),
    /// Anything else.
    Other(Box<tungstenite::Error>),
}

/// Reads a handshake error. `secret` (a token the server may quote back) is
/// cut out of any body kept.
pub(crate) fn handshake(e: tungstenite::Error, secret: Option<&str>) -> Handshake {
    match e {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            let mut body = body.trim().to_string();
            if let Some(secret) = secret.filter(|s| !s.is_empty()) {
                body = body.replace(secret, "<token>");
            }
            match status {
                401 | 403 => Handshake::Unauthorized(if body.is_empty() { format!("HTTP {status}") } else { body }),
                _ => Handshake::Rejected { status, body },
            }
        }
        // tokio-rustls reports handshake failures as I/O errors carrying the rustls error.
        tungstenite::Error::Io(source) => {
            match source.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                // Not TLS at all: the scheme is wrong, not the certificate.
                Some(rustls::Error::InvalidMessage(_)) => {
                    Handshake::InvalidUrl(format!("the server does not answer TLS there (ws:// instead?): {source}"))
                }
                Some(_) => Handshake::Tls(Box::new(source)),
                None => Handshake::Unreachable(source),
            }
        }
        tungstenite::Error::Tls(e) => Handshake::Tls(Box::new(e)),
        tungstenite::Error::Url(e) => Handshake::InvalidUrl(e.to_string()),
        other => Handshake::Other(Box::new(other)),
    }
}
