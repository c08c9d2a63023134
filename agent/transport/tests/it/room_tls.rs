//! `wss://` signaling: the room connects through a TLS-terminating proxy in
//! front of the dev server when the proxy's certificate is trusted, and names
//! TLS as the cause when it is not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{logs, room_name, server, token, wait_for};
use mindbot_transport::room::{self, ConnectOptions, OutgoingData, RoomError, RoomEvent};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::{self, pki_types::PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// A self-signed certificate for `localhost`, as DER, with a proxy that
/// terminates TLS with it and forwards to the dev server.
struct TlsProxy {
    port: u16,
    certificate: Vec<u8>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tls_proxy() -> TlsProxy {
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("a self-signed certificate");
    let certificate = issued.cert.der().to_vec();
    let key = PrivateKeyDer::Pkcs8(issued.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![issued.cert.der().clone()], key)
        .expect("a server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            connections.spawn(async move {
                // A client that rejects our certificate ends the handshake here.
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut upstream) = TcpStream::connect("127.0.0.1:7880").await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    TlsProxy { port, certificate, task }
}

#[tokio::test]
async fn joins_over_wss_when_the_certificate_is_trusted() {
    logs();
    server();
    let proxy = tls_proxy().await;
    let url = format!("wss://localhost:{}", proxy.port);
    let room = room_name("tls");
    let options = ConnectOptions { extra_root_certificates: vec![proxy.certificate.clone()], ..Default::default() };
    let started = Instant::now();
    let (alice, mut alice_events) =
        room::connect(&url, &token(&room, "alice"), options.clone()).await.expect("alice over wss");
    // https:// is the same server.
    let https = format!("https://localhost:{}", proxy.port);
    let (bob, mut bob_events) = room::connect(&https, &token(&room, "bob"), options).await.expect("bob over https");
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "both joined over TLS");
    wait_for(&mut alice_events, Duration::from_secs(5), |e| match e {
        RoomEvent::ParticipantJoined(p) if p.identity == "bob" => Some(()),
        _ => None,
    })
    .await;
    let hello = OutgoingData { payload: b"over tls".to_vec(), topic: None, destinations: vec![], reliable: true };
    alice.send_data(hello).await.unwrap();
    let got = wait_for(&mut bob_events, Duration::from_secs(5), |e| match e {
        RoomEvent::Data(d) => Some(d),
        _ => None,
    })
    .await;
    assert_eq!((got.sender.as_str(), got.payload.as_slice()), ("alice", &b"over tls"[..]));
    alice.leave().await.unwrap();
    bob.leave().await.unwrap();
}

#[tokio::test]
async fn an_untrusted_certificate_is_reported_as_a_tls_error() {
    logs();
    server();
    let proxy = tls_proxy().await;
    let url = format!("wss://localhost:{}", proxy.port);
    let options = ConnectOptions { join_timeout: Duration::from_secs(3), ..Default::default() };
    let started = Instant::now();
    let Err(err) = room::connect(&url, &token(&room_name("tls-untrusted"), "eve"), options).await else {
        panic!("joined through an untrusted certificate");
    };
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert!(matches!(err, RoomError::Tls { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("TLS") && message.contains("certificate"), "{message}");
}
