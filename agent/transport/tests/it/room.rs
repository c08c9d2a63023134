//! The room connection against a real LiveKit server.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::support::*;
use mindbot_transport::room::{ConnectOptions, ConnectionState, DisconnectReason, OutgoingData, RoomError, RoomEvent};

#[tokio::test]
async fn data_flows_both_ways_with_topic_and_sender() {
    logs();
    let room = room_name("data");
    let (alice, mut alice_events) = join(&room, "alice").await;
    let (bob, mut bob_events) = join(&room, "bob").await;
    wait_for(&mut alice_events, Duration::from_secs(5), |e| match e {
        RoomEvent::ParticipantJoined(p) if p.identity == "bob" => Some(()),
        _ => None,
    })
    .await;

    let to_bob = OutgoingData {
        payload: b"hello bob".to_vec(),
        topic: Some("greeting".into()),
        destinations: vec!["bob".into()],
        reliable: true,
    };
    alice.send_data(to_bob).await.unwrap();
    let got = wait_for(&mut bob_events, Duration::from_secs(5), |e| match e {
        RoomEvent::Data(d) => Some(d),
        _ => None,
    })
    .await;
    assert_eq!(
        (got.sender.as_str(), got.topic.as_deref(), got.payload.as_slice()),
        ("alice", Some("greeting"), &b"hello bob"[..])
    );
    assert!(got.reliable);

    // Lossy packets may drop in principle; on loopback a few tries are plenty.
    let to_all = OutgoingData { payload: b"hi all".to_vec(), topic: None, destinations: vec![], reliable: false };
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            bob.send_data(to_all.clone()).await.unwrap();
            let next = tokio::time::timeout(Duration::from_millis(300), alice_events.recv()).await;
            if let Ok(Some(RoomEvent::Data(d))) = next {
                return d;
            }
        }
    })
    .await
    .expect("alice receives bob's lossy packet");
    assert_eq!((got.sender.as_str(), got.topic, got.reliable), ("bob", None, false));
    assert_eq!(got.payload, b"hi all");
    alice.leave().await.unwrap();
    bob.leave().await.unwrap();
}

#[tokio::test]
async fn attributes_reach_other_participants_and_the_server() {
    logs();
    let room = room_name("attrs");
    let (agent, _agent_events) = join(&room, "agent").await;
    let (user, mut user_events) = join(&room, "user").await;
    let attributes =
        HashMap::from([("persona".to_string(), "ada".to_string()), ("voice".to_string(), "alloy".to_string())]);
    agent.set_attributes(attributes.clone()).await.unwrap();
    agent.set_metadata("{\"persona\":\"ada\"}").await.unwrap();
    let seen = wait_for(&mut user_events, Duration::from_secs(5), |e| match e {
        RoomEvent::ParticipantUpdated(p) if p.identity == "agent" && p.metadata.contains("ada") => Some(p),
        _ => None,
    })
    .await;
    assert_eq!(seen.attributes, attributes);
    let listed = api().list_participants(&room).await.unwrap();
    let on_server = listed.iter().find(|p| p.identity == "agent").unwrap();
    assert_eq!(on_server.attributes, attributes);
    agent.leave().await.unwrap();
    user.leave().await.unwrap();
}

#[tokio::test]
async fn removal_through_the_server_api_reports_participant_removed() {
    logs();
    let room = room_name("removed");
    let (_agent, mut events) = join(&room, "agent").await;
    let started = Instant::now();
    api().remove_participant(&room, "agent").await.unwrap();
    let reason = wait_for(&mut events, Duration::from_secs(5), |e| match e {
        RoomEvent::Disconnected { reason } => Some(reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, DisconnectReason::ParticipantRemoved);
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(events.recv().await.is_none(), "no events after Disconnected");
}

#[tokio::test]
async fn deleting_the_room_reports_room_deleted() {
    logs();
    let room = room_name("deleted");
    let (_agent, mut events) = join(&room, "agent").await;
    api().delete_room(&room).await.unwrap();
    let reason = wait_for(&mut events, Duration::from_secs(5), |e| match e {
        RoomEvent::Disconnected { reason } => Some(reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, DisconnectReason::RoomDeleted);
}

#[tokio::test]
async fn a_second_join_with_our_identity_reports_duplicate_identity() {
    logs();
    let room = room_name("duplicate");
    let (_first, mut first_events) = join(&room, "agent").await;
    let (second, _second_events) = join(&room, "agent").await;
    let reason = wait_for(&mut first_events, Duration::from_secs(5), |e| match e {
        RoomEvent::Disconnected { reason } => Some(reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, DisconnectReason::DuplicateIdentity);
    second.leave().await.unwrap();
}

#[tokio::test]
async fn leaving_reports_client_initiated_and_the_server_drops_us() {
    logs();
    let room = room_name("leave");
    let (agent, mut events) = join(&room, "agent").await;
    let (_watcher, mut watcher_events) = join(&room, "watcher").await;
    agent.leave().await.unwrap();
    let reason = wait_for(&mut events, Duration::from_secs(2), |e| match e {
        RoomEvent::Disconnected { reason } => Some(reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, DisconnectReason::ClientInitiated);
    wait_for(&mut watcher_events, Duration::from_secs(3), |e| match e {
        RoomEvent::ParticipantLeft { identity, .. } if identity == "agent" => Some(()),
        _ => None,
    })
    .await;
}

#[tokio::test]
async fn signal_loss_is_resumed_without_leaving_the_room() {
    logs();
    let room = room_name("resume");
    let (agent, mut agent_events) = join(&room, "agent").await;
    let (user, mut user_events) = join(&room, "user").await;
    let sid = agent.sid().to_string();
    agent.simulate_signal_loss().await;
    wait_for(&mut agent_events, Duration::from_secs(2), |e| {
        matches!(e, RoomEvent::ConnectionState(ConnectionState::Reconnecting)).then_some(())
    })
    .await;
    wait_for(&mut agent_events, Duration::from_secs(10), |e| {
        matches!(e, RoomEvent::ConnectionState(ConnectionState::Reconnected)).then_some(())
    })
    .await;
    // Same participant, and data still flows over the resumed connection.
    let on_server = api().list_participants(&room).await.unwrap();
    assert!(on_server.iter().any(|p| p.identity == "agent" && p.sid == sid), "{on_server:?}");
    let hello = OutgoingData { payload: b"still here".to_vec(), reliable: true, ..Default::default() };
    agent.send_data(hello).await.unwrap();
    let got = wait_for(&mut user_events, Duration::from_secs(5), |e| match e {
        RoomEvent::Data(d) => Some(d),
        _ => None,
    })
    .await;
    assert_eq!(got.payload, b"still here");
    agent.set_attributes(HashMap::from([("k".to_string(), "v".to_string())])).await.unwrap();
    agent.leave().await.unwrap();
    user.leave().await.unwrap();
}

#[tokio::test]
async fn a_bad_token_is_refused_within_seconds() {
    server();
    let forged = livekit_api::access_token::AccessToken::with_api_key(API_KEY, "not-the-secret")
        .with_identity("mallory")
        .with_grants(livekit_api::access_token::VideoGrants { room_join: true, room: "x".into(), ..Default::default() })
        .to_jwt()
        .unwrap();
    let started = Instant::now();
    let err = mindbot_transport::room::connect(URL, &forged, ConnectOptions::default()).await.unwrap_err();
    assert!(matches!(err, RoomError::Unauthorized(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let err = mindbot_transport::room::connect(URL, "not-a-jwt", ConnectOptions::default()).await.unwrap_err();
    assert!(matches!(err, RoomError::Unauthorized(_)), "{err}");
}

#[tokio::test]
async fn a_wrong_url_is_reported_within_seconds() {
    server();
    let token = token("x", "agent");
    let started = Instant::now();
    let err = mindbot_transport::room::connect("ws://127.0.0.1:7880/not-livekit", &token, ConnectOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, RoomError::Rejected { status: 404, .. }), "{err}");
    let err = mindbot_transport::room::connect("127.0.0.1:7880", &token, ConnectOptions::default()).await.unwrap_err();
    assert!(matches!(err, RoomError::InvalidUrl { .. }), "{err}");
    let err =
        mindbot_transport::room::connect("wss://127.0.0.1:7880", &token, ConnectOptions::default()).await.unwrap_err();
    assert!(matches!(err, RoomError::InvalidUrl { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_server_that_is_down_is_reported_within_seconds() {
    // Nothing listens on port 9 (discard) of the loopback address.
    let started = Instant::now();
    let err = mindbot_transport::room::connect("ws://127.0.0.1:9", &token("x", "agent"), ConnectOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, RoomError::Unreachable { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // A server that accepts TCP but never answers runs into the join deadline.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", silent.local_addr().unwrap());
    let options = ConnectOptions { join_timeout: Duration::from_secs(2), ..Default::default() };
    let started = Instant::now();
    let err = mindbot_transport::room::connect(&url, &token("x", "agent"), options).await.unwrap_err();
    assert!(matches!(err, RoomError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_published_tone_arrives_with_its_frequency_and_level() {
    logs();
    let room = room_name("tone");
    let (speaker, _speaker_events) = join(&room, "speaker").await;
    let (listener, mut listener_events) = join(&room, "listener").await;
    let source = speaker.publish_audio("microphone").await.unwrap();
    assert!(source.track_sid().starts_with("TR_"), "{}", source.track_sid());

    // 4 s of an 880 Hz tone at a quarter of full scale (-15 dBFS RMS).
    let tone: Vec<i16> = (0..48_000 * 4)
        .map(|i| ((i as f64 * 880.0 * std::f64::consts::TAU / 48_000.0).sin() * 8192.0) as i16)
        .collect();
    let feeder = tokio::spawn(async move { source.push(&tone).await });

    let (participant, mut stream) = wait_for(&mut listener_events, Duration::from_secs(5), |e| match e {
        RoomEvent::AudioTrackSubscribed { participant, stream, .. } => Some((participant, stream)),
        _ => None,
    })
    .await;
    assert_eq!(participant, "speaker");
    // Skip the first half second (codec start-up), then analyse one second.
    let mut pcm = Vec::new();
    let collected = tokio::time::timeout(Duration::from_secs(5), async {
        while pcm.len() < 48_000 * 3 / 2 {
            match stream.recv().await {
                Some(frame) => pcm.extend_from_slice(&frame.samples),
                None => break,
            }
        }
    })
    .await;
    assert!(collected.is_ok() && pcm.len() >= 48_000 * 3 / 2, "got {} samples", pcm.len());
    let window = &pcm[24_000..72_000];
    let freq = frequency(window);
    let level = rms_dbfs(window);
    eprintln!("received tone: {freq:.1} Hz at {level:.1} dBFS");
    assert!((freq - 880.0).abs() <= 10.0, "frequency {freq:.1} Hz");
    assert!((level - -15.05).abs() <= 2.0, "level {level:.1} dBFS");
    feeder.await.unwrap().unwrap();
    speaker.leave().await.unwrap();
    listener.leave().await.unwrap();
}

#[tokio::test]
async fn clearing_the_source_silences_the_track_at_once() {
    logs();
    let room = room_name("clear");
    // The track is already published when the listener joins (subscribed from the join response).
    let (speaker, _speaker_events) = join(&room, "speaker").await;
    let source = speaker.publish_audio("microphone").await.unwrap();
    let tone: Vec<i16> = (0..48_000 * 2).map(|i| if (i / 27) % 2 == 0 { 8000 } else { -8000 }).collect();
    assert_eq!(source.try_push(&tone).unwrap(), tone.len());
    let (_listener, mut listener_events) = join(&room, "listener").await;
    let mut stream = wait_for(&mut listener_events, Duration::from_secs(5), |e| match e {
        RoomEvent::AudioTrackSubscribed { stream, .. } => Some(stream),
        _ => None,
    })
    .await;
    // Hear it, then clear: within a few frames the listener hears nothing loud.
    let loud = |s: &[i16]| rms_dbfs(s) > -30.0;
    tokio::time::timeout(Duration::from_secs(3), async { while !loud(&stream.recv().await.unwrap().samples) {} })
        .await
        .expect("the tone is heard");
    // The speaker's room knows when its own audio last went out.
    let spoken = speaker.audio_heard();
    let sent = spoken.last_sent().expect("our frames are recorded as they go out");
    assert!(sent.elapsed() < Duration::from_secs(1), "last frame out {:?} ago", sent.elapsed());
    source.clear();
    assert_eq!(source.queued(), Duration::ZERO);
    let cleared = Instant::now();
    // Frames already in flight (network, jitter) may still be loud; then it must stop.
    let quiet_after = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match tokio::time::timeout(Duration::from_millis(200), stream.recv()).await {
                Err(_) => return cleared.elapsed(), // no packets at all: silent
                Ok(Some(f)) if !loud(&f.samples) => return cleared.elapsed(),
                Ok(Some(_)) => {}
                Ok(None) => panic!("stream ended"),
            }
        }
    })
    .await
    .expect("the track goes quiet");
    assert!(quiet_after < Duration::from_millis(500), "quiet after {quiet_after:?}");
    // Nothing went out after the clear (but the frame being sent).
    let last = spoken.last_sent().unwrap();
    assert!(last <= cleared + Duration::from_millis(40), "a frame went out {:?} after the clear", last - cleared);
    speaker.leave().await.unwrap();
}

#[tokio::test]
async fn a_resume_on_either_side_keeps_the_speakers_last_packet() {
    logs();
    let room = room_name("resume-heard");
    let (speaker, mut speaker_events) = join(&room, "speaker").await;
    let source = speaker.publish_audio("microphone").await.unwrap();
    let tone: Vec<i16> = (0..48_000).map(|i| if (i / 27) % 2 == 0 { 8000 } else { -8000 }).collect();
    assert_eq!(source.try_push(&tone).unwrap(), tone.len());
    let (listener, mut listener_events) = join(&room, "listener").await;
    let mut stream = wait_for(&mut listener_events, Duration::from_secs(5), |e| match e {
        RoomEvent::AudioTrackSubscribed { stream, .. } => Some(stream),
        _ => None,
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.recv()).await;
    // The tone ends (the speaker's microphone stops): its last packet is the sign.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let heard = listener.audio_heard();
    let last = heard.last("speaker").expect("the speaker's audio arrived");
    // Both resume their signaling, as at a node's loss in a cluster.
    speaker.simulate_signal_loss().await;
    listener.simulate_signal_loss().await;
    for events in [&mut speaker_events, &mut listener_events] {
        wait_for(events, Duration::from_secs(10), |e| {
            matches!(e, RoomEvent::ConnectionState(ConnectionState::Reconnected)).then_some(())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(heard.last("speaker"), Some(last), "the last packet was forgotten at a resume");
    speaker.leave().await.unwrap();
    listener.leave().await.unwrap();
}

/// LiveKit gives the speaker's second track the section of the first; its
/// packets must still arrive (they were dropped whenever the new track's
/// sequence numbers started below the old one's last).
#[tokio::test]
async fn a_speaker_who_leaves_and_joins_again_is_heard_again() {
    logs();
    let room = room_name("rejoin-heard");
    let (listener, mut listener_events) = join(&room, "listener").await;
    let heard = listener.audio_heard();
    let tone: Vec<i16> = (0..48_000 * 2).map(|i| if (i / 27) % 2 == 0 { 8000 } else { -8000 }).collect();
    let mut last = None;
    for visit in 0..2 {
        let (speaker, _speaker_events) = join(&room, "speaker").await;
        let source = speaker.publish_audio("microphone").await.unwrap();
        source.try_push(&tone).unwrap();
        let since = Instant::now();
        let arrived = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match heard.last_arrival("speaker") {
                    Some(t) if t > since && Some(t) != last => return t,
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        })
        .await;
        let mut seen = Vec::new();
        while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(10), listener_events.recv()).await {
            seen.push(format!("{e:?}").chars().take(120).collect::<String>());
        }
        assert!(arrived.is_ok(), "visit {visit}: the speaker's audio never arrived; the listener's events: {seen:#?}");
        last = arrived.ok();
        speaker.leave().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    listener.leave().await.unwrap();
}
