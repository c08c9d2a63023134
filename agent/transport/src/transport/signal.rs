//! The signaling WebSocket to LiveKit's `/rtc` endpoint.
//!
//! Opens the socket the way LiveKit's client SDKs do (token in the
//! `Authorization` header, protocol and SDK in the query, `reconnect=1` and
//! the participant sid to resume), and moves binary protobuf frames:
//! `SignalRequest` out, `SignalResponse` in. HTTP refusals become typed
//! errors. `wss://` runs over rustls with Mozilla's roots plus any the
//! caller adds. It knows nothing of WebRTC; the engine drives it.

use std::net::IpAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use livekit_protocol::{signal_request, signal_response, SignalRequest, SignalResponse};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::room::RoomError;

/// The signaling protocol version we speak (LiveKit's `protocol` query value).
/// 16 gives typed request responses and leave actions; 17 would add media
/// packet trailers, which we do not parse.
pub(crate) const PROTOCOL_VERSION: u32 = 16;

/// WebSocket read chunk (tungstenite's default is 128 KiB).
const READ_BUFFER: usize = 4096;

/// How the join is asked for: fresh, or resuming an existing participant.
#[derive(Debug, Clone)]
pub(crate) enum JoinMode {
    /// A new participant. We subscribe to tracks ourselves (audio only), so
    /// the server's auto-subscribe, which would include video, is off.
    Fresh,
    Resume {
        participant_sid: String,
    },
}

/// One open signaling connection.
pub(crate) struct SignalConn {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl SignalConn {
    /// Opens `/rtc` under `base_url` with the token; fails within `timeout`.
    /// `extra_roots` (DER) are trusted for `wss://` beside the built-in roots.
    pub(crate) async fn open(
        base_url: &str,
        token: &str,
        mode: &JoinMode,
        timeout: Duration,
        extra_roots: &[Vec<u8>],
    ) -> Result<Self, RoomError> {
        let url = rtc_url(base_url, mode)?;
        let connector = if url.starts_with("wss://") { Some(tls_connector(base_url, extra_roots)?) } else { None };
        let mut request = url.as_str().into_client_request().map_err(|e| invalid(base_url, e.to_string()))?;
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| RoomError::Unauthorized("the token has characters not allowed in a header".into()))?;
        request.headers_mut().insert("Authorization", bearer);
        // tungstenite zeroes its whole read buffer on every poll; signaling
        // messages are small, so a small buffer keeps that cheap (and resident memory low).
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let connecting = tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector);
        let (ws, _) = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| RoomError::Timeout { step: "the signaling WebSocket", after: timeout })?
            .map_err(|e| connect_error(base_url, e))?;
        Ok(SignalConn { ws })
    }

    /// Our end of the signaling TCP connection: an address on the interface
    /// that routes to the server, which is where our media socket belongs.
    pub(crate) fn local_ip(&self) -> Result<IpAddr, RoomError> {
        let tcp = match self.ws.get_ref() {
            MaybeTlsStream::Rustls(tls) => tls.get_ref().0,
            other => other.get_ref(),
        };
        tcp.local_addr().map(|a| a.ip()).map_err(RoomError::LocalAddress)
    }

    /// Sends one request.
    pub(crate) async fn send(&mut self, message: signal_request::Message) -> Result<(), RoomError> {
        let bytes = SignalRequest { message: Some(message) }.encode_to_vec();
        self.ws.send(Message::Binary(bytes.into())).await.map_err(|e| RoomError::SignalSocket(Box::new(e)))
    }

    /// The next server message; `Ok(None)` when the server closed the socket.
    /// Cancel-safe, so it can sit in a `select!`.
    pub(crate) async fn recv(&mut self) -> Result<Option<signal_response::Message>, RoomError> {
        loop {
            let frame = match self.ws.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(RoomError::SignalSocket(Box::new(e))),
                Some(Ok(frame)) => frame,
            };
            match frame {
                Message::Binary(bytes) => {
                    let response = SignalResponse::decode(bytes.as_ref())?;
                    if let Some(message) = response.message {
                        return Ok(Some(message));
                    }
                }
                Message::Close(_) => return Ok(None),
                // Pings are answered by tungstenite; text frames are not part of the protocol.
                _ => {}
            }
        }
    }

    /// Closes the socket politely, without waiting long for the server.
    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
    }
}

/// Builds the `/rtc` URL: `http(s)` maps to `ws(s)`, and the query carries
/// what LiveKit's SDKs send (sdk, version, protocol, subscription, resume).
pub(crate) fn rtc_url(base_url: &str, mode: &JoinMode) -> Result<String, RoomError> {
    let base = crate::url::websocket_base(base_url).map_err(|reason| invalid(base_url, reason))?;
    let path = if base.ends_with("/rtc") { base } else { format!("{base}/rtc") };
    let mut url =
        format!("{path}?sdk=rust&version={}&protocol={PROTOCOL_VERSION}&adaptive_stream=0", env!("CARGO_PKG_VERSION"));
    match mode {
        JoinMode::Fresh => url.push_str("&auto_subscribe=0"),
        JoinMode::Resume { participant_sid } => {
            url.push_str("&reconnect=1&sid=");
            url.push_str(participant_sid);
        }
    }
    Ok(url)
}

/// The shared TLS connector, errors as room errors.
fn tls_connector(url: &str, extra_roots: &[Vec<u8>]) -> Result<Connector, RoomError> {
    crate::tls::connector(extra_roots).map_err(|reason| RoomError::Tls { url: url.to_string(), source: reason.into() })
}

fn invalid(url: &str, reason: impl Into<String>) -> RoomError {
    RoomError::InvalidUrl { url: url.to_string(), reason: reason.into() }
}

/// Turns a failed WebSocket handshake into the error an operator can act on.
fn connect_error(url: &str, e: tungstenite::Error) -> RoomError {
    use crate::tls::Handshake;
    match crate::tls::handshake(e, None) {
        Handshake::Unauthorized(why) => RoomError::Unauthorized(why),
        Handshake::Rejected { status, body } => RoomError::Rejected { status, body },
        Handshake::InvalidUrl(reason) => invalid(url, reason),
        Handshake::Tls(source) => RoomError::Tls { url: url.to_string(), source },
        Handshake::Unreachable(source) => RoomError::Unreachable { url: url.to_string(), source },
        Handshake::Other(source) => RoomError::Handshake { url: url.to_string(), source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_map_to_websocket_rtc_path() {
        let fresh = JoinMode::Fresh;
        let url = rtc_url("http://127.0.0.1:7880/", &fresh).unwrap();
        assert!(url.starts_with("ws://127.0.0.1:7880/rtc?sdk=rust&"), "{url}");
        assert!(url.ends_with("&auto_subscribe=0"));
        let url = rtc_url("wss://lk.example.com", &JoinMode::Resume { participant_sid: "PA_x".into() }).unwrap();
        assert!(url.starts_with("wss://lk.example.com/rtc?"), "{url}");
        assert!(url.ends_with("&reconnect=1&sid=PA_x"));
    }

    #[test]
    fn urls_without_scheme_or_host_are_rejected() {
        let fresh = JoinMode::Fresh;
        assert!(matches!(rtc_url("127.0.0.1:7880", &fresh), Err(RoomError::InvalidUrl { .. })));
        assert!(matches!(rtc_url("ftp://host", &fresh), Err(RoomError::InvalidUrl { .. })));
        assert!(matches!(rtc_url("ws:///rtc", &fresh), Err(RoomError::InvalidUrl { .. })));
    }
}
