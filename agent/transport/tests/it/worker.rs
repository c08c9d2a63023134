//! The agent worker against a real LiveKit server: registration, dispatch,
//! capacity, job status, termination, reconnection and refusals.

use mindbot_transport::worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::worker_support::*;
use worker::{
    AgentParticipant, Assignment, Job, JobStatus, TerminationReason, Worker, WorkerError, WorkerEvent, WorkerEvents,
};

const SOON: Duration = Duration::from_secs(10);

async fn assigned(events: &mut WorkerEvents) -> Assignment {
    wait_for(events, SOON, "assignment", |e| match e {
        WorkerEvent::Assigned(a) => Some(a),
        _ => None,
    })
    .await
}

async fn terminated(events: &mut WorkerEvents, within: Duration) -> Option<String> {
    maybe(events, within, |e| match e {
        WorkerEvent::Terminated { job_id, reason } => {
            assert_eq!(reason, TerminationReason::ServerRequested);
            Some(job_id)
        }
        _ => None,
    })
    .await
}

#[tokio::test]
async fn registers_and_receives_a_dispatched_job_with_its_metadata_intact() {
    logs();
    server();
    let agent = unique("w-dispatch");
    let (worker, mut events) = Worker::connect(options(URL, &agent)).await.expect("registering");
    let worker_id = connected(&mut events, SOON).await;
    assert!(worker_id.starts_with("AW_"), "{worker_id}");

    let room = unique("w-dispatch-room");
    let metadata = r#"{"user_id":"5b0c1f0e-6f1e-4c55-9a57-2f1d3c4b5a69","persona":"ada","overrides":{"voice":"é✓"}}"#;
    let started = Instant::now();
    let dispatch = dispatch(&dispatcher(HTTP_URL), &room, &agent, metadata).await;
    let a = assigned(&mut events).await;
    eprintln!("dispatch to assignment: {:?}", started.elapsed());

    assert_eq!(a.job.room, room);
    assert_eq!(a.job.metadata, metadata, "dispatch metadata reaches the worker byte for byte");
    assert_eq!(a.job.dispatch_id, dispatch.id);
    assert_eq!(a.job.agent_name, agent);
    assert_eq!(a.job.participant_identity, None, "a room job is about no participant");
    assert_eq!(a.participant_identity, format!("agent-{}", a.job.id));
    assert_eq!(a.url, URL, "the server gives no URL, so the worker's own is used");
    assert_eq!(a.token.split('.').count(), 3, "the join token is a JWT");

    worker.job_status(&a.job.id, JobStatus::Running).await.unwrap();
    worker.job_status(&a.job.id, JobStatus::Success).await.unwrap();
    worker.shutdown().await.expect("a clean shutdown");
}

#[tokio::test]
async fn deleting_the_dispatch_terminates_a_running_job_but_not_one_reported_ended() {
    logs();
    server();
    let agent = unique("w-term");
    let (worker, mut events) = Worker::connect(options(URL, &agent)).await.expect("registering");
    connected(&mut events, SOON).await;
    let api = dispatcher(HTTP_URL);
    let (ended_room, running_room) = (unique("w-term-ended"), unique("w-term-running"));
    let ended_dispatch = dispatch(&api, &ended_room, &agent, "{}").await;
    let ended = assigned(&mut events).await;
    let running_dispatch = dispatch(&api, &running_room, &agent, "{}").await;
    let running = assigned(&mut events).await;

    worker.job_status(&ended.job.id, JobStatus::Running).await.unwrap();
    worker.job_status(&ended.job.id, JobStatus::Failed("user left".into())).await.unwrap();
    worker.job_status(&running.job.id, JobStatus::Running).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    api.delete_dispatch(&ended_dispatch.id, &ended_room).await.expect("DeleteDispatch");
    api.delete_dispatch(&running_dispatch.id, &running_room).await.expect("DeleteDispatch");
    let started = Instant::now();
    assert_eq!(terminated(&mut events, SOON).await.as_deref(), Some(running.job.id.as_str()));
    eprintln!("dispatch deletion to termination: {:?}", started.elapsed());
    // The server only terminates jobs it still counts as running: the ended one stays quiet.
    assert_eq!(terminated(&mut events, Duration::from_secs(2)).await, None);
    worker.shutdown().await.unwrap();
}

/// Joins the assignment's room as the agent participant, as a session would.
async fn join(a: &Assignment) -> (mindbot_transport::room::Room, mindbot_transport::room::RoomEvents) {
    mindbot_transport::room::connect(&a.url, &a.token, mindbot_transport::room::ConnectOptions::default())
        .await
        .expect("joining with the assignment's token")
}

#[tokio::test]
async fn the_server_terminates_a_job_when_its_agent_leaves_or_is_in_a_deleted_room() {
    logs();
    server();
    let agent = unique("w-room");
    let mut chooses = options(URL, &agent);
    chooses.accept_fn = Some(Arc::new(|job: &Job| {
        let attributes = HashMap::from([("persona".to_string(), "ada".to_string())]);
        Some(AgentParticipant {
            identity: format!("mindbot-{}", job.id),
            name: "MindBot".into(),
            attributes,
            ..Default::default()
        })
    }));
    let (worker, mut events) = Worker::connect(chooses).await.expect("registering");
    connected(&mut events, SOON).await;
    let (api, rooms) = (dispatcher(HTTP_URL), rooms(HTTP_URL));

    // The agent participant has the identity, name and attributes the worker chose.
    let room = unique("w-room-removed");
    let d = dispatch(&api, &room, &agent, "{}").await;
    let a = assigned(&mut events).await;
    let (agent_room, _room_events) = join(&a).await;
    assert_eq!(agent_room.identity(), a.participant_identity);
    let listed = rooms.list_participants(&room).await.expect("ListParticipants");
    let me = listed.iter().find(|p| p.identity == a.participant_identity).expect("the agent is listed");
    assert_eq!(a.participant_identity, format!("mindbot-{}", a.job.id));
    assert_eq!(me.name, "MindBot");
    assert_eq!(me.attributes.get("persona").map(String::as_str), Some("ada"));
    assert_eq!(me.attributes.get("lk.agent.name"), Some(&agent));

    // Removing the agent makes the server end the job, once the room has filed the job.
    recorded(&api, &d.id, &room).await;
    rooms.remove_participant(&room, &a.participant_identity).await.expect("RemoveParticipant");
    let started = Instant::now();
    assert_eq!(terminated(&mut events, SOON).await.as_deref(), Some(a.job.id.as_str()));
    eprintln!("agent removal to termination: {:?}", started.elapsed());

    // A room deleted before its agent joined: nobody left, so nothing is terminated.
    let unjoined = unique("w-room-unjoined");
    let d = dispatch(&api, &unjoined, &agent, "{}").await;
    assigned(&mut events).await;
    recorded(&api, &d.id, &unjoined).await;
    rooms.delete_room(&unjoined).await.expect("DeleteRoom");
    assert_eq!(terminated(&mut events, Duration::from_secs(2)).await, None);

    // Deleting the room disconnects the agent, which ends the job the same way.
    let deleted = unique("w-room-deleted");
    let d = dispatch(&api, &deleted, &agent, "{}").await;
    let a = assigned(&mut events).await;
    let (_in_deleted, _) = join(&a).await;
    recorded(&api, &d.id, &deleted).await;
    rooms.delete_room(&deleted).await.expect("DeleteRoom");
    let started = Instant::now();
    let ended = terminated(&mut events, SOON).await;
    eprintln!("room deletion to termination: {:?} ({ended:?})", started.elapsed());
    assert_eq!(ended.as_deref(), Some(a.job.id.as_str()));
    worker.shutdown().await.unwrap();
}

/// Waits until the room lists the dispatch's job. The server files it there
/// (and only then knows which participant is the job's agent) after it has
/// finished asking its nodes which agents they serve: up to 5 s after a
/// dispatch when its cache of agent names is fresh.
async fn recorded(api: &livekit_api::services::agent_dispatch::AgentDispatchClient, id: &str, room: &str) {
    let started = Instant::now();
    loop {
        let d = api.get_dispatch(id, room).await.expect("ListDispatch").expect("the dispatch exists");
        if d.state.is_some_and(|s| !s.jobs.is_empty()) {
            eprintln!("dispatch {id} filed its job after {:?}", started.elapsed());
            return;
        }
        assert!(started.elapsed() < SOON, "the room never filed the job of dispatch {id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_dispatches_in_the_same_instant_never_exceed_one_slot() {
    logs();
    server();
    let agent = unique("w-cap");
    let mut one_slot = options(URL, &agent);
    one_slot.max_jobs = 1;
    let (small, mut small_events) = Worker::connect(one_slot).await.expect("registering the one-slot worker");
    connected(&mut small_events, SOON).await;
    // A second worker that reports itself almost fully loaded (but still
    // available), so the server offers both jobs to the one-slot worker first
    // and turns here only when refused.
    let mut busy = options(URL, &agent);
    busy.load_threshold = 1.0;
    busy.load_fn = Some(Arc::new(|| 0.99));
    let (big, mut big_events) = Worker::connect(busy).await.expect("registering the loaded worker");
    connected(&mut big_events, SOON).await;

    let api = dispatcher(HTTP_URL);
    let (first, second) = (unique("w-cap-a"), unique("w-cap-b"));
    let started = Instant::now();
    tokio::join!(dispatch(&api, &first, &agent, "{}"), dispatch(&api, &second, &agent, "{}"));

    let mut small_jobs = Vec::new();
    let mut big_jobs = Vec::new();
    while small_jobs.len() + big_jobs.len() < 2 {
        tokio::select! {
            a = assigned(&mut small_events) => small_jobs.push(a.job.room),
            a = assigned(&mut big_events) => big_jobs.push(a.job.room),
        }
    }
    eprintln!("both jobs placed in {:?}", started.elapsed());
    // Anything more for the one-slot worker would be over capacity.
    let extra =
        maybe(&mut small_events, Duration::from_secs(2), |e| matches!(e, WorkerEvent::Assigned(_)).then_some(()));
    assert_eq!(extra.await, None, "the one-slot worker took a second job");
    assert_eq!((small_jobs.len(), big_jobs.len()), (1, 1), "one job each: {small_jobs:?} / {big_jobs:?}");
    let mut placed = [small_jobs, big_jobs].concat();
    placed.sort();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(placed, expected);
    small.shutdown().await.unwrap();
    big.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_draining_worker_takes_no_new_job() {
    logs();
    server();
    let agent = unique("w-drain");
    let (worker, mut events) = Worker::connect(options(URL, &agent)).await.expect("registering");
    connected(&mut events, SOON).await;
    let api = dispatcher(HTTP_URL);
    dispatch(&api, &unique("w-drain-a"), &agent, "{}").await;
    let running = assigned(&mut events).await;

    worker.drain().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    dispatch(&api, &unique("w-drain-b"), &agent, "{}").await;
    let next = maybe(&mut events, Duration::from_secs(3), |e| matches!(e, WorkerEvent::Assigned(_)).then_some(()));
    assert_eq!(next.await, None, "a draining worker was given a job");
    // The running job is untouched and can still report.
    worker.job_status(&running.job.id, JobStatus::Success).await.unwrap();
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn reregisters_after_the_server_restarts_and_takes_the_next_job() {
    logs();
    let mut server = PrivateServer::start(7980, 50400);
    let agent = unique("w-restart");
    let mut one_slot = options(&server.url(), &agent);
    one_slot.max_jobs = 1;
    let (worker, mut events) = Worker::connect(one_slot).await.expect("registering");
    let first_id = connected(&mut events, SOON).await;
    dispatch(&dispatcher(&server.http_url()), &unique("w-restart-a"), &agent, "{}").await;
    let before = assigned(&mut events).await;

    server.stop();
    let reason = wait_for(&mut events, SOON, "Disconnected event", |e| match e {
        WorkerEvent::Disconnected { reason } => Some(reason),
        _ => None,
    })
    .await;
    eprintln!("disconnected: {reason}");
    // The session ends while the server is away; its slot must come back for the next job.
    worker.job_status(&before.job.id, JobStatus::Success).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let restarted = Instant::now();
    server.resume();
    let second_id = connected(&mut events, Duration::from_secs(20)).await;
    eprintln!("re-registered {:?} after the server answered again", restarted.elapsed());
    assert_ne!(first_id, second_id, "a new registration");

    let room = unique("w-restart-b");
    dispatch(&dispatcher(&server.http_url()), &room, &agent, r#"{"after":"restart"}"#).await;
    let after = assigned(&mut events).await;
    assert_eq!((after.job.room.as_str(), after.job.metadata.as_str()), (room.as_str(), r#"{"after":"restart"}"#));
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_silent_server_is_noticed_by_ping_and_rejoined_when_it_answers_again() {
    logs();
    let server = PrivateServer::start(7982, 50450);
    let agent = unique("w-frozen");
    let mut quick = options(&server.url(), &agent);
    quick.ping_interval = Duration::from_millis(300);
    quick.ping_timeout = Duration::from_secs(1);
    quick.connect_timeout = Duration::from_secs(1);
    let (worker, mut events) = Worker::connect(quick).await.expect("registering");
    let first_id = connected(&mut events, SOON).await;

    server.freeze();
    let frozen = Instant::now();
    let reason = wait_for(&mut events, SOON, "Disconnected event", |e| match e {
        WorkerEvent::Disconnected { reason } => Some(reason),
        _ => None,
    })
    .await;
    eprintln!("a frozen server noticed after {:?}: {reason}", frozen.elapsed());
    assert!(frozen.elapsed() < Duration::from_secs(3), "took {:?}", frozen.elapsed());

    tokio::time::sleep(Duration::from_secs(2)).await;
    server.thaw();
    let second_id = connected(&mut events, SOON).await;
    assert_ne!(first_id, second_id);
    let room = unique("w-frozen-room");
    dispatch(&dispatcher(&server.http_url()), &room, &agent, "{}").await;
    assert_eq!(assigned(&mut events).await.job.room, room);
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn first_connect_fails_fast_naming_the_cause() {
    logs();
    server();
    let agent = unique("w-refused");

    let mut wrong_secret = options(URL, &agent);
    wrong_secret.token = token_fn("not-the-secret");
    let started = Instant::now();
    let err = Worker::connect(wrong_secret).await.expect_err("a token signed with the wrong secret");
    assert!(matches!(err, WorkerError::Unauthorized(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    eprintln!("wrong secret: {err}");

    let err = Worker::connect(options("ws://127.0.0.1:7880/not-livekit", &agent)).await.expect_err("a wrong path");
    assert!(matches!(err, WorkerError::Rejected { status: 404, .. }), "{err:?}");
    eprintln!("wrong path: {err}");

    let started = Instant::now();
    let err = Worker::connect(options("ws://127.0.0.1:7979", &agent)).await.expect_err("nothing listens there");
    assert!(matches!(err, WorkerError::Unreachable { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    eprintln!("server down: {err}");

    let err = Worker::connect(options("wss://127.0.0.1:7880", &agent)).await.expect_err("no TLS in this build");
    assert!(matches!(err, WorkerError::InvalidUrl { .. }), "{err:?}");
}
