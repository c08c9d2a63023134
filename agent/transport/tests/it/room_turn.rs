//! Relay-only ICE through LiveKit's embedded TURN server: a private LiveKit
//! server (its own ports, TURN on UDP 3478 and the same port as its STUN
//! server) is started by the test and killed with it; participants joining with
//! `IcePolicy::RelayOnly` offer only a relayed candidate, so data and audio
//! that arrive went through the TURN allocation.

use crate::support;

use std::time::{Duration, Instant};

use crate::support::{frequency, logs, room_name, token, wait_for};
use mindbot_transport::room::{self, ConnectOptions, IcePolicy, OutgoingData, Room, RoomEvent, RoomEvents};
use tokio::process::{Child, Command};

const URL: &str = "ws://127.0.0.1:7990";

/// The private server; dropping it kills the process.
struct TurnServer {
    _child: Child,
}

async fn turn_server() -> TurnServer {
    let root = mindbot_tests::root();
    // The dev server script installs the binary.
    support::server();
    let config = std::env::temp_dir().join(format!("mindbot-livekit-turn-{}.yaml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "port: 7990\n\
             bind_addresses: [\"127.0.0.1\"]\n\
             rtc:\n  tcp_port: 7991\n  udp_port: 7992\n  use_external_ip: false\n  node_ip: 127.0.0.1\n\
             \x20 stun_servers: [\"127.0.0.1:3478\"]\n\
             \x20 interfaces:\n    includes: [\"lo\"]\n  enable_loopback_candidate: true\n\
             turn:\n  enabled: true\n  domain: localhost\n  udp_port: 3478\n  bind_addresses: [\"127.0.0.1\"]\n\
             \x20 relay_range_start: 31000\n  relay_range_end: 31100\n\
             \x20 allow_restricted_peer_cidrs: [\"127.0.0.0/8\"]\n\
             keys:\n  {}: {}\n\
             logging:\n  level: warn\n",
            support::API_KEY,
            support::API_SECRET
        ),
    )
    .unwrap();
    let child = Command::new(root.join(".cache/livekit/bin/server"))
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(config.with_extension("log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("starting the private LiveKit server");
    let started = Instant::now();
    while tokio::net::TcpStream::connect("127.0.0.1:7990").await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "the private LiveKit server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    TurnServer { _child: child }
}

async fn join_relayed(room: &str, identity: &str) -> (Room, RoomEvents) {
    let options = ConnectOptions { ice_policy: IcePolicy::RelayOnly, ..Default::default() };
    let started = Instant::now();
    let joined = room::connect(URL, &token(room, identity), options)
        .await
        .unwrap_or_else(|e| panic!("{identity} joining {room} relay-only: {e}"));
    eprintln!("{identity} joined relay-only in {:?}", started.elapsed());
    joined
}

#[tokio::test]
async fn relay_only_participants_exchange_data_and_audio() {
    logs();
    let _server = turn_server().await;
    let room = room_name("turn");
    let (alice, mut alice_events) = join_relayed(&room, "alice").await;
    let (bob, mut bob_events) = join_relayed(&room, "bob").await;
    wait_for(&mut alice_events, Duration::from_secs(5), |e| match e {
        RoomEvent::ParticipantJoined(p) if p.identity == "bob" => Some(()),
        _ => None,
    })
    .await;

    let hello = OutgoingData { payload: b"via turn".to_vec(), topic: None, destinations: vec![], reliable: true };
    alice.send_data(hello.clone()).await.unwrap();
    let got = wait_for(&mut bob_events, Duration::from_secs(5), |e| match e {
        RoomEvent::Data(d) => Some(d),
        _ => None,
    })
    .await;
    assert_eq!((got.sender.as_str(), got.payload.as_slice()), ("alice", &b"via turn"[..]));
    bob.send_data(hello).await.unwrap();
    let got = wait_for(&mut alice_events, Duration::from_secs(5), |e| match e {
        RoomEvent::Data(d) => Some(d),
        _ => None,
    })
    .await;
    assert_eq!(got.sender, "bob");

    // Two seconds of a 660 Hz tone from alice reach bob.
    let source = alice.publish_audio("microphone").await.unwrap();
    let tone: Vec<i16> = (0..48_000 * 2)
        .map(|i| ((i as f64 * 660.0 * std::f64::consts::TAU / 48_000.0).sin() * 8192.0) as i16)
        .collect();
    let feeder = tokio::spawn(async move { source.push(&tone).await });
    let mut stream = wait_for(&mut bob_events, Duration::from_secs(5), |e| match e {
        RoomEvent::AudioTrackSubscribed { stream, .. } => Some(stream),
        _ => None,
    })
    .await;
    let mut pcm = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while pcm.len() < 48_000 {
            match stream.recv().await {
                Some(frame) => pcm.extend_from_slice(&frame.samples),
                None => break,
            }
        }
    })
    .await;
    assert!(pcm.len() >= 48_000, "got {} samples", pcm.len());
    let freq = frequency(&pcm[24_000..48_000]);
    assert!((freq - 660.0).abs() <= 10.0, "frequency {freq:.1} Hz");
    feeder.await.unwrap().unwrap();
    alice.leave().await.unwrap();
    bob.leave().await.unwrap();
}
