//! One end user's visit, as a real user makes it: a new account with a card
//! of random size (through `metering`), a session token from the public API
//! (`POST /v1/sessions`, which dispatches the agent when the user joins), a
//! join through the load balancer with this crate's room client, a tone, and
//! a departure: at a chosen time, after stepping away and coming back within
//! the grace, or when the agent hangs up at zero balance. Everything is timed
//! on the user's own clock, from the agent's `started` message on.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use jsonwebtoken::{EncodingKey, Header};
use metering::{cards, UserId};
use mindbot_transport::room::{
    self, AudioSource, ConnectOptions, DisconnectReason, Room, RoomEvent, RoomEvents, SAMPLE_RATE,
};
use serde_json::json;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a user back in the room waits for the agent to be announced
/// before counting it gone (LiveKit announces participants in batches).
const AGENT_BACK: Duration = Duration::from_secs(5);

/// How long a user keeps trying to join (or rejoin) the room.
const JOIN_WITHIN: Duration = Duration::from_secs(30);

/// Where the users go and how they sign in.
pub struct Target {
    pub api_url: String,
    pub jwt_key: String,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub persona: String,
    pub http: reqwest::Client,
}

/// What a user means to do.
#[derive(Debug, Clone, Copy)]
pub enum Plan {
    /// Stays this long after `started`, then leaves.
    Stay(Duration),
    /// After `after`, drops out for `away` (within the grace), comes back, and leaves at `stay`.
    StepAway { after: Duration, away: Duration, stay: Duration },
    /// Stays until the agent hangs up at zero balance.
    RunOut,
}

/// What a user saw.
#[derive(Debug)]
pub struct Outcome {
    pub room: String,
    pub plan: Plan,
    pub card_minutes: i32,
    /// Join finished (the token dispatches the agent) to the agent's `started`.
    pub to_started: Option<Duration>,
    /// The agent's `started` on its way: its `at_ms` (when the agent sent
    /// it; the meter starts a return trip after it arrives) to its arrival,
    /// on this machine's one clock.
    pub started_transit: Option<Duration>,
    /// `started` to the user's leaving or removal, on the user's clock.
    pub seen: Option<Duration>,
    /// Time the user was out of the room (left to back in).
    pub away: Duration,
    /// When they were out: (left, back), from `started`.
    pub away_spans: Vec<(Duration, Duration)>,
    /// At the user's own leave, how long ago their microphone last sent a
    /// frame: this process falling behind (300 users on the cluster's
    /// cores) stops their audio early, and a leave that reaches the agent
    /// late is charged only to shortly after their last audio.
    pub mic_quiet: Option<Duration>,
    /// The server ended the user's connection, and why.
    pub removed: Option<DisconnectReason>,
    /// Removal past the moment the card ran out (`started` + the card's time), for `RunOut` users.
    pub hang_up: Option<Duration>,
    /// Wall-clock time of `started` (to place the visit against a fault's times).
    pub started_at: Option<SystemTime>,
    /// Spans without an agent, from `started`: its leaving the room (or the
    /// user back to a room without it) to the next agent's `started`, if
    /// one came (a room dispatched again after its node went, say).
    pub agent_gaps: Vec<(Duration, Option<Duration>)>,
    /// The reason of the agent's `ended` message, when one came.
    pub told: Option<String>,
    /// Came back from stepping away to a room without its agent.
    pub back_to_no_agent: bool,
    /// Retries of `POST /v1/sessions` the user needed (the API answered 5xx or not at all).
    pub retries: u32,
    /// Times the user's connection broke and they joined again.
    pub reconnects: u32,
    /// Joins that failed and were tried again.
    pub join_retries: u32,
    pub error: Option<String>,
}

impl Outcome {
    /// A visit about to be made: nothing seen yet.
    pub fn new(plan: Plan, card_minutes: i32) -> Outcome {
        Outcome {
            room: String::new(),
            plan,
            card_minutes,
            to_started: None,
            started_transit: None,
            seen: None,
            away: Duration::ZERO,
            away_spans: Vec::new(),
            mic_quiet: None,
            removed: None,
            hang_up: None,
            started_at: None,
            agent_gaps: Vec::new(),
            told: None,
            back_to_no_agent: false,
            retries: 0,
            reconnects: 0,
            join_retries: 0,
            error: None,
        }
    }

    /// Time away within the first `until` after `started`.
    pub fn away_before(&self, until: Duration) -> Duration {
        self.away_spans.iter().map(|&(left, back)| back.min(until).saturating_sub(left)).sum()
    }

    /// The time the user had an agent: `started` to their leaving or
    /// removal, less the spans without one.
    pub fn served(&self) -> Option<Duration> {
        let seen = self.seen?;
        let without: Duration = self
            .agent_gaps
            .iter()
            .map(|&(gone, back)| back.unwrap_or(seen).min(seen).saturating_sub(gone.min(seen)))
            .sum();
        Some(seen - without)
    }

    /// The agent is gone as of `at` (from `started`), unless it already was.
    fn agent_gone(&mut self, at: Duration) {
        if self.agent_gaps.last().is_none_or(|g| g.1.is_some()) {
            self.agent_gaps.push((at, None));
        }
    }

    /// An agent's `started` came at `at`: the span without one, if open, ends.
    fn agent_back(&mut self, at: Duration) {
        if let Some(gap) = self.agent_gaps.last_mut().filter(|g| g.1.is_none()) {
            gap.1 = Some(at);
        }
    }
}

/// A random number below `n` (uuid's v4 generator is random enough for a benchmark's choices).
pub fn roll(n: u64) -> u64 {
    (uuid::Uuid::new_v4().as_u128() % u128::from(n.max(1))) as u64
}

/// A user's JWT for the public API.
fn user_jwt(target: &Target, user: UserId) -> Result<String> {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": user.to_string(), "iss": target.jwt_issuer, "aud": target.jwt_audience,
        "iat": now, "exp": now + 3600});
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(target.jwt_key.as_bytes()))
        .context("signing a user's API token")
}

/// A new user with one active card of `minutes`.
async fn funded_user(pool: &PgPool, minutes: i32) -> Result<UserId> {
    let user = sqlx::query_scalar!(
        r#"INSERT INTO users (email, full_name, password_hash) VALUES ($1, 'Load User', '!') RETURNING id AS "id: UserId""#,
        format!("load-{}@bench.invalid", uuid::Uuid::new_v4().simple())
    )
    .fetch_one(pool)
    .await
    .context("creating a load user")?;
    cards::grant(pool, user, minutes).await.context("granting a load user's card")?;
    Ok(user)
}

/// `POST /v1/sessions` as a patient user makes it: an answer of 5xx (or
/// none) is retried for up to 60 s (a database outage makes the API answer
/// 503 for a while); any other refusal ends the visit.
async fn session_grant_retried(target: &Target, user: UserId, retries: &mut u32) -> Result<(String, String, String)> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        match session_grant(target, user).await {
            Ok(grant) => return Ok(grant),
            Err(Grant::Retry(e)) if Instant::now() < until => {
                *retries += 1;
                tracing::debug!(error = %e, "POST /v1/sessions will be retried");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(Grant::Retry(e) | Grant::Refused(e)) => return Err(e),
        }
    }
}

enum Grant {
    /// Worth trying again: no answer, or a 5xx.
    Retry(anyhow::Error),
    Refused(anyhow::Error),
}

/// The user's LiveKit URL, room and token from `POST /v1/sessions`.
async fn session_grant(target: &Target, user: UserId) -> Result<(String, String, String), Grant> {
    let jwt = user_jwt(target, user).map_err(Grant::Refused)?;
    let reply = target
        .http
        .post(format!("{}/v1/sessions", target.api_url))
        .bearer_auth(jwt)
        .header("content-type", "application/json")
        .body(json!({"persona": target.persona}).to_string())
        .send()
        .await
        .context("POST /v1/sessions")
        .map_err(Grant::Retry)?;
    let status = reply.status();
    let bytes = reply.bytes().await.context("reading the answer to POST /v1/sessions").map_err(Grant::Retry)?;
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if status.is_server_error() {
        return Err(Grant::Retry(anyhow!("POST /v1/sessions answered {status}: {body}")));
    }
    if status.as_u16() != 201 {
        return Err(Grant::Refused(anyhow!("POST /v1/sessions answered {status}: {body}")));
    }
    let field =
        |k: &str| body[k].as_str().map(str::to_string).ok_or_else(|| Grant::Refused(anyhow!("no {k} in {body}")));
    let url = field("livekit_url")?;
    if !mindbot_transport::url::host_is_loopback(&url) {
        return Err(Grant::Refused(anyhow!(
            "the API sent users to {url}, not a loopback address: bench load drives only a local cluster"
        )));
    }
    Ok((url, field("room")?, field("token")?))
}

/// In the room with a tone playing.
struct Present {
    room: Room,
    events: RoomEvents,
    tone: JoinHandle<()>,
    /// The tone's track, once published.
    source: Arc<Mutex<Option<AudioSource>>>,
}

async fn enter(url: &str, token: &str) -> Result<Present> {
    // The tone at Opus complexity 0: this one process encodes every user's
    // microphone (300 tracks, 15,000 frames a second), on the cores the
    // cluster runs on; at the default it spent over twice the CPU.
    let options = ConnectOptions {
        subscribe_audio: false,
        join_timeout: Duration::from_secs(30),
        opus_complexity: 0,
        ..Default::default()
    };
    let (room, events) = room::connect(url, token, options).await.context("joining through the load balancer")?;
    // Published beside the visit, as an SDK does: the visit reads the
    // agent's messages the moment they arrive (its clock starts at
    // `started`), not after the publication's round trip.
    let publisher = room.sender();
    let shared = Arc::new(Mutex::new(None));
    let published = shared.clone();
    let tone = tokio::spawn(async move {
        let Ok(source) = publisher.publish_audio("microphone").await else {
            return tracing::debug!("the tone was not published");
        };
        *published.lock().unwrap_or_else(|p| p.into_inner()) = Some(source.clone());
        let pcm: Vec<i16> = (0..SAMPLE_RATE as usize)
            .map(|i| ((i as f64 * 440.0 * std::f64::consts::TAU / f64::from(SAMPLE_RATE)).sin() * 6000.0) as i16)
            .collect();
        while source.push(&pcm).await.is_ok() {}
    });
    Ok(Present { room, events, tone, source: shared })
}

impl Present {
    /// How long ago the tone last sent a frame (the room's only track of ours).
    fn mic_quiet(&self) -> Option<Duration> {
        Some(self.room.audio_heard().last_sent()?.elapsed())
    }

    /// The tone stops at once, audio already queued included, as a
    /// microphone does when its user leaves: the user's clock stops here,
    /// however long the leave then takes to go out.
    fn hush(&self) {
        self.tone.abort();
        if let Some(source) = self.source.lock().unwrap_or_else(|p| p.into_inner()).take() {
            source.clear();
        }
    }

    async fn leave(self) {
        self.hush();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.room.leave()).await;
    }
}

/// Endings after which a user's SDK joins again (the server or the network
/// went, not the room or the user's welcome).
fn reconnects_after(reason: &DisconnectReason) -> bool {
    matches!(
        reason,
        DisconnectReason::SignalLost
            | DisconnectReason::ServerShutdown
            | DisconnectReason::MediaFailure
            | DisconnectReason::Failed(_)
    )
}

/// Joins with the token, trying again every second for up to `limit` (a
/// LiveKit cluster refuses joins for a moment after Redis restarts, and the
/// load balancer needs a moment to find a node gone). The error is the last
/// attempt's; `retries` counts the attempts that failed.
async fn enter_within(url: &str, token: &str, limit: Duration, retries: &mut u32) -> Result<Present> {
    let until = Instant::now() + limit;
    loop {
        match enter(url, token).await {
            Ok(p) => return Ok(p),
            Err(e) if Instant::now() + Duration::from_secs(1) < until => {
                *retries += 1;
                tracing::debug!(error = %e, "join failed; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs one visit to its end; `stop` asks the user to leave now (the run is over).
pub async fn visit(pool: &PgPool, target: &Target, plan: Plan, card_minutes: i32, stop: &CancellationToken) -> Outcome {
    let mut out = Outcome::new(plan, card_minutes);
    if let Err(e) = run(pool, target, stop, &mut out).await {
        out.error = Some(format!("{e:#}"));
    }
    out
}

async fn run(pool: &PgPool, target: &Target, stop: &CancellationToken, out: &mut Outcome) -> Result<()> {
    let user = funded_user(pool, out.card_minutes).await?;
    let (url, room, token) = session_grant_retried(target, user, &mut out.retries).await?;
    out.room = room;
    let mut present = enter_within(&url, &token, JOIN_WITHIN, &mut out.join_retries).await?;
    let joined = Instant::now();
    // The agents in the room (LiveKit's participant kind), by identity.
    let mut agents: HashSet<String> = HashSet::new();
    let started = loop {
        let event = tokio::select! {
            e = present.events.recv() => e,
            _ = tokio::time::sleep_until((joined + Duration::from_secs(60)).into()) => {
                present.leave().await;
                bail!("no `started` from the agent within 60 s of joining");
            }
        };
        match event {
            Some(RoomEvent::Data(d)) if d.topic.as_deref() == Some("mindbot.session") => {
                let v: serde_json::Value = serde_json::from_slice(&d.payload).unwrap_or_default();
                match v["type"].as_str() {
                    Some("started") => {
                        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                        out.started_transit =
                            v["at_ms"].as_u64().map(|at| now.saturating_sub(Duration::from_millis(at)));
                        break Instant::now();
                    }
                    Some(other) => {
                        present.leave().await;
                        bail!("the agent sent {other} before started: {v}");
                    }
                    None => {}
                }
            }
            Some(RoomEvent::ParticipantJoined(p)) if p.is_agent => {
                agents.insert(p.identity);
            }
            Some(RoomEvent::Disconnected { reason }) => bail!("removed before started: {reason:?}"),
            None => bail!("the room connection ended before started"),
            _ => {}
        }
    };
    out.to_started = Some(started - joined);
    out.started_at = Some(SystemTime::now());
    let far = started + Duration::from_secs(86_400);
    // Set while a user back from stepping away waits to see the agent.
    let mut missing_since: Option<Instant> = None;
    let (mut step_at, mut leave_at, away_for) = match out.plan {
        Plan::Stay(stay) => (far, started + stay, Duration::ZERO),
        Plan::StepAway { after, away, stay } => (started + after, started + stay, away),
        Plan::RunOut => (far, far, Duration::ZERO),
    };
    loop {
        let event = tokio::select! {
            e = present.events.recv() => e,
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(leave_at.into()) => break,
            _ = tokio::time::sleep_until(step_at.into()) => {
                step_at = far;
                // Away from the moment they leave (their microphone stops),
                // however long the server takes to have their leave.
                let gone = Instant::now();
                present.leave().await;
                tokio::time::sleep(away_for).await;
                present = enter_within(&url, &token, JOIN_WITHIN, &mut out.join_retries)
                    .await
                    .context("coming back within the grace")?;
                out.away += gone.elapsed();
                out.away_spans.push((gone - started, started.elapsed()));
                leave_at = leave_at.max(Instant::now() + Duration::from_secs(1));
                // The agent is announced again within moments, or it is gone.
                agents.clear();
                missing_since = Some(Instant::now());
                continue;
            }
            _ = tokio::time::sleep_until(missing_since.map_or(far, |t| t + AGENT_BACK).into()) => {
                // Back in the room and no agent there: it left while the user was away.
                if let Some(back) = missing_since.take() {
                    out.agent_gone(back - started);
                    out.back_to_no_agent = true;
                }
                continue;
            }
        };
        // The connection broke (its LiveKit node went, say): rejoin through
        // the load balancer, as LiveKit's SDKs reconnect in full once a
        // resume fails; the call goes on, or ends at the break.
        let broken = match &event {
            None => Some(DisconnectReason::SignalLost),
            Some(RoomEvent::Disconnected { reason }) if reconnects_after(reason) => Some(reason.clone()),
            _ => None,
        };
        if let Some(reason) = broken {
            let at = Instant::now();
            present.hush();
            let back = if stop.is_cancelled() {
                None
            } else {
                enter_within(&url, &token, JOIN_WITHIN, &mut out.join_retries).await.ok()
            };
            match back {
                Some(back) => {
                    present = back;
                    out.reconnects += 1;
                    agents.clear();
                    missing_since = Some(Instant::now());
                    continue;
                }
                None => {
                    out.seen = Some(at - started);
                    out.removed = Some(reason);
                    return Ok(());
                }
            }
        }
        match event {
            Some(RoomEvent::Disconnected { reason }) => {
                let at = Instant::now();
                out.seen = Some(at - started);
                out.removed = Some(reason);
                if matches!(out.plan, Plan::RunOut) {
                    let card = Duration::from_secs(out.card_minutes as u64 * 60);
                    out.hang_up = Some(at.saturating_duration_since(started + card));
                }
                present.hush();
                return Ok(());
            }
            None => unreachable!("a broken connection is rejoined above"),
            Some(RoomEvent::ParticipantJoined(p)) if p.is_agent => {
                agents.insert(p.identity);
                missing_since = None;
            }
            Some(RoomEvent::ParticipantLeft { identity, .. }) if agents.remove(&identity) && agents.is_empty() => {
                out.agent_gone(started.elapsed());
            }
            Some(RoomEvent::Data(d)) if d.topic.as_deref() == Some("mindbot.session") => {
                let v: serde_json::Value = serde_json::from_slice(&d.payload).unwrap_or_default();
                if v["type"] == "started" {
                    out.agent_back(started.elapsed());
                }
                if v["type"] == "ended" {
                    let reason = v["reason"].as_str().unwrap_or("").to_string();
                    // At zero balance or a limit the agent removes the user next
                    // (the hang-up is timed to that); any other end means the
                    // agent is gone, and the user leaves.
                    let hangs_up = matches!(reason.as_str(), "balance_exhausted" | "time_limit" | "daily_limit");
                    out.told = Some(reason);
                    if !hangs_up {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    // The user's clock stops when they leave (their microphone stops then),
    // not when the server has their leave: under load that takes seconds,
    // in which they hear and say nothing.
    out.seen = Some(started.elapsed());
    out.mic_quiet = present.mic_quiet();
    present.leave().await;
    Ok(())
}
