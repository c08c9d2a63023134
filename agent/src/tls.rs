//! TLS for LiveKit's WebSockets (`wss://` signaling and the agent-worker
//! socket): rustls on the aws-lc-rs provider the WebRTC stack already builds,
//! trusting Mozilla's roots plus any the caller adds, and a reading of
//! handshake failures shared by both sockets.

use std::sync::Arc;

use tokio_tungstenite::Connector;

/// A connector trusting Mozilla's roots and `extra_roots` (DER).
pub(crate) fn connector(extra_roots: &[Vec<u8>]) -> Result<Connector, String> {
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
    Ok(Connector::Rustls(Arc::new(config)))
}

/// What a failed TLS handshake means, when the I/O error is one.
pub(crate) enum TlsFailure {
    /// The server does not speak TLS there (a `ws://` server behind `wss://`).
    NotTls,
    /// TLS failed: an untrusted certificate, a wrong name...
    Failed(String),
}

/// Reads a rustls failure out of an I/O error from the handshake.
pub(crate) fn failure(e: &std::io::Error) -> Option<TlsFailure> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match tls {
        rustls::Error::InvalidMessage(_) => TlsFailure::NotTls,
        other => TlsFailure::Failed(other.to_string()),
    })
}
