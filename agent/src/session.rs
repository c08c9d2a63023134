//! One job, from assignment to hang-up: join the room, work out the user and
//! the persona, refuse (with a reason the user sees) or open a metered
//! session, keep the user informed of their balance, and end the session for
//! the first reason that comes: the user left and did not return, a persona
//! limit, the balance ran out (hang up through the server API), the room or
//! the agent went away, the database stayed down, or the worker shut down.
//!
//! Charging is the meter's: the session only tells it when the user is in
//! the room (pause/resume) and closes it with the reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{ConstantBuilder, ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use livekit_api::services::room::RoomClient;
use metering::meter::{Meter, MeterEvent, MeteredSession, Pause, Presence};
use metering::session::{EndReason, OpenRules, OpenSession};
use metering::{reservations, UserId};
use mindbot_transport::room::{
    self, AudioStream, ConnectOptions, ConnectionState, DisconnectReason, OutgoingData, Room, RoomEvent, RoomEvents,
};
use mindbot_transport::worker::Assignment;
use personas::{AccessFacts, AccessPolicy, Catalog, CustomRules, PersonaError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::conventions::{self, Publisher, ATTR_AGENT_STATE};
use crate::handshake::{self, Handshake};
use crate::refusal::Refusal;
use crate::usage::SessionUsage;
use crate::voice::observe::{AgentState, VoiceEvent};

/// Data topic for session status and refusals.
pub const TOPIC_SESSION: &str = "mindbot.session";
/// Data topic for balance updates.
pub const TOPIC_BALANCE: &str = "mindbot.balance";

/// How long the reason message leads the hang-up.
const REASON_LEAD: Duration = Duration::from_millis(300);

/// How a session hangs up when the money runs out (`worker.hangup`).
pub use crate::config::HangUp;

/// What every session shares.
pub struct Context {
    pub pool: PgPool,
    pub meter: Arc<Meter>,
    pub catalog: Catalog,
    /// Custom personas' rules (no built-in slug, the pricing floor).
    pub rules: CustomRules,
    pub access: AccessPolicy,
    pub rooms: RoomClient,
    pub default_persona: String,
    pub user_grace: Duration,
    pub user_wait: Duration,
    /// How long a user's client has to acknowledge the readiness probe
    /// before the session starts anyway (see `handshake`).
    pub ready_wait: Duration,
    /// How long admission waits for a database that does not answer.
    pub db_wait: Duration,
    pub balance_every: Duration,
    pub hangup: HangUp,
    pub worker_id: String,
    /// The voice pipeline's providers; `None` when `voice.enabled` is off.
    pub voice: Option<Arc<crate::voice::VoiceService>>,
    /// This worker's metrics (the charged totals live there).
    pub metrics: crate::telemetry::Metrics,
}

/// The dispatch metadata a job carries (JSON). The API and `demo` write it
/// with this type, so what they send is what the worker reads. It travels
/// inside the participant token the API signs, so a user cannot change it.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobMetadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persona: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overrides: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age: Option<u32>,
    /// The persona as quoted when the token was issued (which one, its exact
    /// rate, its definition): the worker refuses `persona_changed` when the
    /// persona no longer matches. Absent (an operator's own dispatch), the
    /// persona runs at its current rate, within the same custom rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quote: Option<personas::Quote>,
}

/// A participant token for `identity` in `room` whose room configuration
/// dispatches the agent `agent_name` with `metadata`: what the app joins with.
pub fn dispatch_token(
    lk: &crate::config::LivekitConfig,
    identity: &str,
    name: &str,
    room: &str,
    metadata: &JobMetadata,
    ttl: Duration,
) -> anyhow::Result<String> {
    use livekit_api::access_token::{AccessToken, VideoGrants};
    use livekit_protocol::{RoomAgentDispatch, RoomConfiguration};
    let metadata = serde_json::to_string(metadata)?;
    AccessToken::with_api_key(&lk.api_key, lk.api_secret.expose())
        .with_identity(identity)
        .with_name(name)
        .with_ttl(ttl)
        .with_grants(VideoGrants { room_join: true, room: room.to_string(), ..Default::default() })
        .with_room_config(RoomConfiguration {
            agents: vec![RoomAgentDispatch { agent_name: lk.agent_name.clone(), metadata, ..Default::default() }],
            ..Default::default()
        })
        .to_jwt()
        .map_err(|e| anyhow::anyhow!("signing a participant token: {e}"))
}

/// A session refused before any charge: why, and the sentence the user gets.
#[derive(Debug)]
struct Refused {
    reason: Refusal,
    detail: String,
    /// The database did not answer (admission waits for it and tries again).
    database: bool,
}

impl Refused {
    fn new(reason: Refusal, detail: impl std::fmt::Display) -> Refused {
        Refused { reason, detail: detail.to_string(), database: false }
    }
}

/// How the job ended, for the worker's job status.
pub enum Outcome {
    Refused(Refusal),
    Ended(EndReason),
    Failed(String),
}

/// What can end a session from outside it.
#[derive(Clone, Default)]
pub struct Stop {
    /// The worker is shutting down (drain timeout or a second SIGTERM).
    pub shutdown: CancellationToken,
    /// LiveKit terminated this job (room gone, agent removed, dispatch deleted).
    pub terminated: CancellationToken,
}

/// How long a terminated job waits for the room to say why, before it ends
/// as `agent_removed` (the server took the job away while the room lives).
const TERMINATION_WAIT: Duration = Duration::from_secs(2);

/// The least time between two typed turns (`lk.chat`) that are answered.
const TYPED_TURN_GAP: Duration = Duration::from_secs(1);

/// After this long without a packet from a user whose microphone is on, the
/// worker asks the server whether they are still in the room; again at most
/// every [`ROLL_CALL_EVERY`] while the quiet lasts. LiveKit can drop a user
/// without a word to the others: under load a join of the same identity
/// that the user's client had given up on can reach the room late, remove
/// the user (`DUPLICATE_IDENTITY`) and then go itself, and neither removal
/// reaches the agent. Without the question the meter charges on until the
/// room closes (60 s and more in a node-stop run). A user who is listed is
/// charged as before: a client that stops sending while it listens gains
/// nothing by it.
const ROLL_CALL_QUIET: Duration = Duration::from_secs(5);
const ROLL_CALL_EVERY: Duration = Duration::from_secs(10);

/// Runs one job to its end.
pub async fn run(ctx: Arc<Context>, a: Assignment, stop: Stop) -> Outcome {
    let (room, mut events) = match join(&a, &stop).await {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("joining room {}: {e}", a.job.room)),
    };
    let initializing = HashMap::from([(ATTR_AGENT_STATE.to_string(), AgentState::Initializing.as_str().to_string())]);
    if let Err(e) = room.set_attributes(initializing).await {
        warn!(error = %e, "could not set lk.agent.state");
    }
    match admit(&ctx, &a, &mut events).await {
        Err((user, seen, refusal)) => {
            info!(room = %a.job.room, reason = refusal.reason.code(), detail = %refusal.detail, "session refused");
            metrics::counter!("mindbot_sessions_refused_total", "reason" => refusal.reason.code()).increment(1);
            // A re-offered or re-dispatched job whose session is active already.
            if refusal.reason == Refusal::DuplicateSession {
                // The user's session goes on elsewhere: nothing to tell them,
                // and its reservation is that session's.
                let _ = room.leave().await;
                return Outcome::Refused(refusal.reason);
            }
            if let Some(user) = user.as_deref().and_then(|u| u.parse::<UserId>().ok()) {
                // The token's place is free again.
                if let Err(e) = reservations::release(&ctx.pool, user, &a.job.room).await {
                    warn!(error = %e, "could not release the session reservation");
                }
            }
            if let Some(user) = user {
                // Tell the user once they are in the room to hear it, and give
                // the message a moment to leave before we do.
                if !seen {
                    wait_for_identity(&mut events, &user, ctx.user_wait).await;
                }
                let msg = json!({"type": "refused", "reason": refusal.reason.code(), "detail": refusal.detail});
                send(&room, TOPIC_SESSION, &user, &msg).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let _ = room.leave().await;
            Outcome::Refused(refusal.reason)
        }
        Ok(admitted) => {
            let persona = admitted.slug.clone();
            metrics::gauge!("mindbot_sessions_active", "persona" => persona.clone()).increment(1.0);
            let reason = converse(&ctx, &room, &mut events, admitted, &stop).await;
            metrics::gauge!("mindbot_sessions_active", "persona" => persona.clone()).decrement(1.0);
            let _ = room.leave().await;
            Outcome::Ended(reason)
        }
    }
}

/// Attempts at joining a job's room when the server or the path to it fails.
const JOIN_ATTEMPTS: usize = 3;
/// The wait before the second attempt; it doubles before the third.
const JOIN_RETRY_AFTER: Duration = Duration::from_millis(500);

/// Joins the job's room. A join that failed for a reason that may pass (a
/// LiveKit node going away, media that did not come up within the join
/// timeout) is tried again: LiveKit lists the job as taken whatever became
/// of it, so nobody else would come to this user.
async fn join(a: &Assignment, stop: &Stop) -> Result<(Room, RoomEvents), String> {
    let attempt = || room::connect(&a.url, &a.token, ConnectOptions::default());
    let retried = attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(JOIN_RETRY_AFTER)
                .with_max_times(JOIN_ATTEMPTS - 1)
                .with_jitter(),
        )
        .when(room::RoomError::is_transient)
        .notify(|e, after| {
            metrics::counter!("mindbot_room_join_retries_total").increment(1);
            warn!(error = %e, retry_in_ms = after.as_millis() as u64, "joining the room failed; trying again");
        });
    tokio::select! {
        joined = retried => joined.map_err(|e| e.to_string()),
        _ = stop.terminated.cancelled() => Err("the job was terminated while joining".into()),
        _ = stop.shutdown.cancelled() => Err("the worker shut down while joining".into()),
    }
}

struct Admitted {
    user: UserId,
    identity: String,
    slug: String,
    metered: MeteredSession,
    /// Minutes this session may last (persona session limit or today's allowance).
    cap: Option<(Duration, EndReason)>,
    /// The persona as granted (overrides applied, premium features left
    /// out below premium access), for the voice.
    persona: personas::PersonaConfig,
    /// The persona's premium features this user does not get.
    premium_left_out: Vec<String>,
}

/// Works out user and persona, checks access and opens the metered session.
async fn admit(
    ctx: &Context,
    a: &Assignment,
    events: &mut RoomEvents,
) -> Result<Admitted, (Option<String>, bool, Refused)> {
    let meta: JobMetadata = if a.job.metadata.trim().is_empty() {
        JobMetadata::default()
    } else {
        match serde_json::from_str(&a.job.metadata) {
            Ok(m) => m,
            Err(e) => {
                let first = first_user(events, ctx.user_wait).await;
                let seen = first.is_some();
                return Err((first, seen, Refused::new(Refusal::MalformedMetadata, e)));
            }
        }
    };
    let (identity, present) = match &meta.user_id {
        Some(id) => (id.clone(), false),
        None => match first_user(events, ctx.user_wait).await {
            Some(id) => (id, true),
            None => return Err((None, false, Refused::new(Refusal::NoUser, "no user joined the room"))),
        },
    };
    let user_id = identity.clone();
    let refuse = move |r: Refused| (Some(user_id.clone()), present, r);
    let user: UserId = identity.parse().map_err(|e| refuse(Refused::new(Refusal::UnknownUser, e)))?;
    let slug = meta.persona.clone().unwrap_or_else(|| ctx.default_persona.clone());
    // A database that does not answer is waited for, as running sessions
    // wait for it (`meter.db_grace_seconds`): the user waits in the room,
    // then is refused only if it is still down.
    // Bounded by time, not attempts: one attempt can itself wait out the
    // pool's acquire timeout.
    let since = Instant::now();
    let (granted, metered) = (|| open_session(ctx, a, user, &slug, &meta))
        .retry(ConstantBuilder::new().with_delay(Duration::from_secs(1)).without_max_times())
        .when(|r: &Refused| r.database && since.elapsed() < ctx.db_wait)
        .notify(|r: &Refused, _| warn!(detail = %r.detail, "the database did not answer at admission; trying again"))
        .await
        .map_err(refuse)?;
    let persona = &granted.persona;
    // Not charged until the user's media is connected (LiveKit's ACTIVE:
    // from then on they hear the agent); under load that can be seconds
    // after they are first seen in the room.
    metered.pause();
    let session_limit = granted.session_limit_minutes();
    let cap = granted.session_cap_minutes().map(|m| {
        let reason = if session_limit == Some(m) { EndReason::TimeLimit } else { EndReason::DailyLimit };
        (Duration::from_secs(m.max(0) as u64 * 60), reason)
    });
    info!(room = %a.job.room, session = %metered.id(), %user, persona = %slug, "session started");
    let persona = persona.clone();
    let premium_left_out = granted.premium_left_out.clone();
    Ok(Admitted { user, identity, slug, metered, cap, persona, premium_left_out })
}

/// The database's part of admission: the persona as it is now, held to
/// the quote the token carries and to the custom rules, the user's access
/// to it, and the metered session opened (nothing is charged on refusal).
async fn open_session(
    ctx: &Context,
    a: &Assignment,
    user: UserId,
    slug: &str,
    meta: &JobMetadata,
) -> Result<(personas::Granted, MeteredSession), Refused> {
    let resolved = personas::resolve_for_session(&ctx.pool, &ctx.catalog, &ctx.rules, slug, meta.quote.as_ref())
        .await
        .map_err(persona_refusal)?;
    let facts = AccessFacts::load(&ctx.pool, &ctx.access, user, slug, meta.age, chrono::Utc::now())
        .await
        .map_err(persona_refusal)?;
    let granted = personas::check_access(&resolved.config, &facts, meta.overrides.as_ref()).map_err(persona_refusal)?;
    let persona = &granted.persona;
    let rules = OpenRules { one_per_persona: persona.daily_usage_limit.is_some() };
    let open = OpenSession {
        user,
        session_key: a.job.id.clone(),
        room: a.job.room.clone(),
        persona_slug: slug.to_string(),
        rate: persona.base_cost_multiplier,
        agent_type: "production".into(),
        worker_id: ctx.worker_id.clone(),
        ad_supported: persona.ad_supported,
    };
    let metered = ctx.meter.open_with(open, rules).await.map_err(|e| {
        let database = matches!(e, metering::Error::Database(_));
        if database {
            database_error("open");
        }
        Refused { database, ..Refused::new(Refusal::of_metering(&e), e) }
    })?;
    Ok((granted, metered))
}

fn persona_refusal(e: PersonaError) -> Refused {
    let database = matches!(e, PersonaError::Database(_));
    if database {
        database_error("admit");
    }
    Refused { database, ..Refused::new(Refusal::of_persona(&e), e) }
}

/// Counts a database failure a session met outside the meter's ticks
/// (those are `mindbot_meter_write_failures_total`).
fn database_error(stage: &'static str) {
    metrics::counter!("mindbot_database_errors_total", "stage" => stage).increment(1);
}

/// The first non-agent participant to be in the room, within `wait`.
async fn first_user(events: &mut RoomEvents, wait: Duration) -> Option<String> {
    tokio::time::timeout(wait, async {
        while let Some(e) = events.recv().await {
            if let RoomEvent::ParticipantJoined(p) = e {
                if !p.is_agent {
                    return Some(p.identity);
                }
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// Waits until `identity` is in the room (at most `wait`); `false` if it never came.
async fn wait_for_identity(events: &mut RoomEvents, identity: &str, wait: Duration) -> bool {
    tokio::time::timeout(wait, async {
        while let Some(e) = events.recv().await {
            if matches!(&e, RoomEvent::ParticipantJoined(p) if p.identity == identity) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

async fn send(room: &Room, topic: &str, to: &str, body: &serde_json::Value) {
    let data = OutgoingData {
        payload: body.to_string().into_bytes(),
        topic: Some(topic.to_string()),
        destinations: vec![to.to_string()],
        reliable: true,
    };
    if let Err(e) = room.send_data(data).await {
        warn!(error = %e, topic, "data message not sent");
    }
}

/// Tells the users of orphaned sessions that their session ended: another
/// worker died mid-session (SIGKILL, a lost machine), this worker's reaper
/// closed its sessions at their last heartbeat, and the dead worker cannot
/// say so itself. Sent through the server API, as the `ended` message the
/// session would have sent (reason `orphaned`), to the user alone. Runs
/// until the meter stops.
pub async fn tell_orphans(ctx: Arc<Context>, mut reaped: tokio::sync::broadcast::Receiver<Vec<metering::SessionId>>) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let ids = match reaped.recv().await {
            Ok(ids) => ids,
            Err(RecvError::Lagged(missed)) => {
                warn!(missed, "orphan batches missed; their users were not told");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        // Read one after another (one pooled connection at a time: the meter
        // writes through the same pool), then sent concurrently: a room its
        // user already left makes the server API wait for an answer that
        // never comes, which must not hold up the rest.
        let mut orphans = Vec::with_capacity(ids.len());
        for id in ids {
            match ctx.meter.store().session(id).await {
                Ok(s) => orphans.push(s),
                Err(e) => warn!(session = %id, error = %e, "orphaned session not read; its user is not told"),
            }
        }
        futures_util::stream::iter(orphans).for_each_concurrent(ORPHAN_NOTICES_AT_ONCE, |s| tell_orphan(&ctx, s)).await;
    }
}

/// Orphan notices sent at once, and how long one may take. A killed
/// worker's batch is its whole load; most of its rooms may have lost their
/// users by the reap, and each of those holds a slot for the full timeout,
/// so a batch goes out together up to this many (at 32, a batch of 145
/// took 7 s, and users still there left untold).
const ORPHAN_NOTICES_AT_ONCE: usize = 256;
const ORPHAN_NOTICE_TIMEOUT: Duration = Duration::from_secs(5);

async fn tell_orphan(ctx: &Context, session: metering::records::VoiceSession) {
    let id = session.id;
    let body = json!({"type": "ended", "reason": EndReason::Orphaned.as_str()});
    let options = livekit_api::services::room::SendDataOptions {
        kind: livekit_protocol::data_packet::Kind::Reliable,
        destination_identities: vec![session.user_id.to_string()],
        topic: Some(TOPIC_SESSION.to_string()),
        ..Default::default()
    };
    let sent = ctx.rooms.send_data(&session.room_name, body.to_string().into_bytes(), options);
    match tokio::time::timeout(ORPHAN_NOTICE_TIMEOUT, sent).await {
        Ok(Ok(())) => info!(session = %id, room = %session.room_name, "told the user their orphaned session ended"),
        // The room may be gone with the user: nobody left to tell.
        Ok(Err(e)) => debug!(session = %id, room = %session.room_name, error = %e, "orphan's user not told"),
        Err(_) => debug!(session = %id, room = %session.room_name, "orphan's user not told: the server did not answer"),
    }
}

async fn send_balance(room: &Room, s: &Admitted, why: &str) {
    let snap = s.metered.snapshot();
    // Whole seconds rounded up, as a countdown shows them: the full time at
    // the start (the meter may already have run a fraction, see
    // `handshake`), 1 until the last fraction is spent.
    let remaining = snap.remaining.map(|r| r.as_millis().div_ceil(1000) as i64);
    let mut body = json!({
        "type": why,
        "remaining_seconds": remaining,
        "remaining_ms": snap.remaining.map(|r| r.as_millis() as u64),
        "balance_ms": snap.spendable.0,
        "persona": s.slug,
    });
    if s.persona.ad_supported {
        // Earned (rewarded-ad) time is spent first, paid time last: of the
        // remaining time, what the paid cards pay for is paid, the rest
        // earned (`earned_ms` is as of the last write; the live fraction
        // since comes off the earned part).
        let paid_ms = snap.spendable.0 - snap.earned.0;
        let paid = s.persona.base_cost_multiplier.whole_seconds_in(metering::Millis(paid_ms));
        body["earned_ms"] = json!(snap.earned.0);
        body["paid_ms"] = json!(paid_ms);
        body["earned_seconds"] = json!(remaining.map(|r| (r - paid).max(0)));
        body["paid_seconds"] = json!(remaining.map(|r| paid.min(r)));
    }
    send(room, TOPIC_BALANCE, &s.identity, &body).await;
}

/// Tells the user their session started, once their client acknowledged a
/// readiness probe (their data channel is open, see `handshake`). The meter
/// starts when they acknowledge a probe sent after this, so their clock
/// starts first; the balance follows then (`begin`).
async fn announce(room: &Room, s: &Admitted) {
    // `at_ms`: when it was sent (Unix ms), so a client can tell how long it
    // was on its way; the meter starts a return trip after it arrives.
    let at_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let started = json!({"type": "started", "persona": s.slug, "session": s.metered.id(),
        "premium_left_out": s.premium_left_out, "at_ms": at_ms});
    send(room, TOPIC_SESSION, &s.identity, &started).await;
}

/// The session starts: the meter runs from `since` (unless our own
/// connection is down: then from its return), the user gets their balance
/// (the time it pays for is known once the meter runs), and the agent
/// greets and listens to the audio it held back. A start the user's client
/// has not `confirmed` writes nothing until the handshake decides it (see
/// `handshake`).
async fn begin(
    room: &Room,
    (since, confirmed): (Instant, bool),
    s: &Admitted,
    connection_down: bool,
    voice: &Option<crate::voice::VoiceHandle>,
    unheard: Option<AudioStream>,
) {
    match (connection_down, confirmed) {
        (true, _) => {}
        (false, true) => s.metered.resume_from(since),
        (false, false) => s.metered.resume_unconfirmed(since),
    }
    send_balance(room, s, "balance").await;
    if let Some(v) = voice {
        v.greet();
        if let Some(stream) = unheard {
            v.hear(stream);
        }
    }
}

/// The readiness handshake's next step, when due (never without one).
async fn next_probe(room: &Room, user: &str, handshake: &mut Option<Handshake>) -> handshake::Due {
    match handshake {
        Some(h) => {
            sleep_until(h.due_at()).await;
            h.on_due(room, user).await
        }
        None => std::future::pending().await,
    }
}

/// The persona as room attributes, for frontends that show who they talk to.
async fn publish_persona(room: &Room, persona: &personas::PersonaConfig) {
    let attributes = HashMap::from([
        ("mindbot.persona".to_string(), persona.slug.clone()),
        ("mindbot.persona.name".to_string(), persona.name.clone()),
        ("mindbot.voice.tts".to_string(), persona.voice.tts.clone()),
        ("mindbot.voice.style".to_string(), persona.voice.style.clone()),
    ]);
    if let Err(e) = room.set_attributes(attributes).await {
        warn!(error = %e, "could not publish the persona attributes");
    }
}

/// The metered conversation: runs until an end reason, closes the session.
async fn converse(ctx: &Context, room: &Room, events: &mut RoomEvents, mut s: Admitted, stop: &Stop) -> EndReason {
    // The session starts (`started` goes out; then the meter runs, the
    // agent greets and listens) once the user's client can receive it: the
    // readiness handshake under way, whether `started` went out, and
    // whether the session has started.
    let mut announced = false;
    let mut started = false;
    let mut handshake: Option<Handshake> = None;
    // The user's audio, heard only once the session has started.
    let mut unheard: Option<AudioStream> = None;
    publish_persona(room, &s.persona).await;
    // The user's last audio packet: a leave the cluster relays late is not
    // charged past it; bounded by the agent's own last words, which a
    // client that stops sending could listen to (see metering's `Presence`).
    // Dated to the audio's capture, a queue on the way not counted (the
    // time dated back shares that bound: see metering's `Presence`).
    let heard = room.audio_heard();
    let (spoken, arrived) = (heard.clone(), heard.clone());
    let (user, arrived_user) = (s.identity.clone(), s.identity.clone());
    s.metered.set_presence(
        Presence::new(move || heard.last(&user).map(Instant::from_std))
            .with_spoken(move || spoken.last_sent().map(Instant::from_std))
            .with_arrival(move || arrived.last_arrival(&arrived_user).map(Instant::from_std)),
    );
    let usage = Arc::new(SessionUsage::default());
    let mut voice = match &ctx.voice {
        Some(v) => v
            .start(room, &s.persona, s.metered.watch(), usage.clone())
            .await
            .map_err(|e| warn!(error = %e, "no voice"))
            .ok(),
        None => None,
    };
    // `initializing` was set at join.
    // Its own task sends what LiveKit's frontends read, so this loop never
    // waits on the server for it.
    let conventions = Publisher::start(room.sender(), &s.identity, AgentState::Initializing);
    match &voice {
        Some(v) => conventions.agent_track(v.track_sid()),
        None => conventions.state(AgentState::Idle),
    }
    // Typed turns, at most one per TYPED_TURN_GAP: each starts a model
    // request the provider bills even when the next one aborts it.
    let mut typed_at: Option<Instant> = None;
    let mut voice_reports = voice.is_some();
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    let mut cap_at = s.cap.map_or(far, |(d, _)| Instant::now() + d);
    // A user whose media never connects (or who left before we joined) ends
    // the session uncharged; the meter runs from the handshake that follows
    // their `ParticipantActive`.
    let mut grace_at = Instant::now() + ctx.user_wait;
    let mut next_balance = Instant::now() + ctx.balance_every;
    let mut next_usage = Instant::now() + crate::usage::SAVE_EVERY;
    // Set where the worker ends a session the user is still in for a reason
    // of its own (drain over, database gone): the user is told why below.
    let mut tell_user = false;
    // Our media connection is down, or our signaling connection resuming:
    // no charging until it is back.
    let (mut media_down, mut resuming) = (false, false);
    // The user's participant sid (from their `ParticipantActive`), and the
    // question to the server whether it is still in the room, if one is out.
    let mut user_sid: Option<String> = None;
    let mut roll_call_at = Instant::now() + ROLL_CALL_QUIET;
    let mut roll_call: Option<RollCall<'_>> = None;
    let reason = loop {
        tokio::select! {
            _ = stop.shutdown.cancelled() => {
                tell_user = true;
                break EndReason::Shutdown;
            }
            _ = stop.terminated.cancelled() => {
                // Ending is decided now; the room's reason may take a moment.
                s.metered.stop(None);
                break termination_reason(events).await;
            }
            _ = sleep_until(cap_at) => {
                let (limit, reason) = s.cap.unwrap_or((Duration::ZERO, EndReason::TimeLimit));
                // The limit is on metered time: time the user was away does not count.
                let live = s.metered.live();
                if live < limit {
                    cap_at = Instant::now() + (limit - live);
                    continue;
                }
                // Charging stops at exactly the limit, before the message, the lead and the hang-up.
                s.metered.stop(Some(limit));
                send(room, TOPIC_SESSION, &s.identity, &json!({"type": "ended", "reason": reason.as_str()})).await;
                hang_up(ctx, room, events, &s.identity).await;
                break reason;
            }
            _ = sleep_until(grace_at) => break EndReason::UserLeft,
            _ = sleep_until(roll_call_at), if roll_call.is_none() => {
                roll_call_at = Instant::now() + ROLL_CALL_QUIET;
                let last = room.audio_heard().last_arrival(&s.identity).map(Instant::from_std);
                match (last, &user_sid) {
                    (Some(last), Some(sid))
                        if started && grace_at == far && !media_down && !resuming && last.elapsed() >= ROLL_CALL_QUIET =>
                    {
                        roll_call = Some(Box::pin(still_listed(&ctx.rooms, room.name().to_string(), s.identity.clone(), sid.clone())));
                        roll_call_at = Instant::now() + ROLL_CALL_EVERY;
                    }
                    (Some(last), _) => roll_call_at = roll_call_at.min(last + ROLL_CALL_QUIET).max(Instant::now() + Duration::from_millis(200)),
                    (None, _) => {}
                }
            }
            (sid, listed) = async { roll_call.as_mut().expect("guarded by the condition").await }, if roll_call.is_some() => {
                roll_call = None;
                // Only an answer about the user as they still are here counts.
                if listed == Some(false) && user_sid.as_deref() == Some(sid.as_str()) && grace_at == far {
                    metrics::counter!("mindbot_unannounced_leaves_total").increment(1);
                    let not_charged = s.metered.pause_from_last_heard(Pause::UserLeft);
                    warn!(user_sid = %sid, not_charged_ms = not_charged.as_millis() as u64,
                        "the server no longer lists the user, and no leave reached us: charging stopped at their last audio");
                    user_sid = None;
                    grace_at = Instant::now() + ctx.user_grace;
                    handshake = None;
                }
            }
            due = next_probe(room, &s.identity, &mut handshake) => {
                if due != handshake::Due::GaveUp {
                    continue;
                }
                let Some(mut h) = handshake.take() else { continue };
                if started {
                    // No receipt after `started` (a client without RPC): the start stands.
                    s.metered.keep_start();
                } else if h.phase() == handshake::Phase::Reaching && !announced {
                    metrics::counter!("mindbot_session_ready_timeouts_total").increment(1);
                    warn!(waited_ms = ctx.ready_wait.as_millis() as u64,
                        "the user's client acknowledged no readiness probe; starting anyway");
                    // A client without RPC, or one whose data channel is not
                    // open yet (a loaded server): the session starts with
                    // `started` going out, but the meter writes nothing until
                    // a probe sent after it is acknowledged (the start then
                    // moves to that receipt less the lead, if later) or the
                    // confirmation wait is over (it stands).
                    announce(room, &s).await;
                    announced = true;
                    h.announced();
                    let since = h.meter_from();
                    handshake = Some(h);
                    started = true;
                    begin(room, (since, false), &s, media_down || resuming, &voice, unheard.take()).await;
                } else {
                    warn!("the user's client did not acknowledge a probe after `started`; starting anyway");
                    started = true;
                    begin(room, (h.meter_from(), true), &s, media_down || resuming, &voice, unheard.take()).await;
                }
            }
            _ = sleep_until(next_balance) => {
                send_balance(room, &s, "balance").await;
                next_balance = Instant::now() + ctx.balance_every;
            }
            _ = sleep_until(next_usage) => {
                save_usage(ctx, s.metered.id(), &usage).await;
                next_usage = Instant::now() + crate::usage::SAVE_EVERY;
            }
            ev = s.metered.next_event() => match ev {
                Some(MeterEvent::Warning { remaining }) => {
                    send_balance(room, &s, "warning").await;
                    voice.iter().for_each(|v| v.warn(remaining));
                }
                Some(MeterEvent::Extended { .. }) => send_balance(room, &s, "extended").await,
                Some(MeterEvent::Exhausted) => {
                    send(room, TOPIC_SESSION, &s.identity, &json!({"type": "ended", "reason": "balance_exhausted"})).await;
                    hang_up(ctx, room, events, &s.identity).await;
                    break EndReason::BalanceExhausted;
                }
                Some(MeterEvent::DatabaseUnavailable) => {
                    tell_user = true;
                    break EndReason::DbUnavailable;
                }
                Some(MeterEvent::ClosedElsewhere) | None => break EndReason::RoomClosed,
            },
            report = next_report(&mut voice), if voice_reports => match report {
                Some(report) => conventions.voice(report),
                None => voice_reports = false,
            },
            ev = events.recv() => match ev {
                Some(RoomEvent::RpcReceipt { from, request_id })
                    if handshake.as_ref().is_some_and(|h| h.is_receipt(&s.identity, &from, &request_id)) =>
                {
                    let h = handshake.as_mut().expect("matched on a handshake");
                    let waited = h.waited();
                    if h.phase() == handshake::Phase::Reaching && !announced {
                        metrics::histogram!("mindbot_session_ready_seconds").record(waited.as_secs_f64());
                        info!(waited_ms = waited.as_millis() as u64, "the user's client is reachable; telling it the session starts");
                        announce(room, &s).await;
                        announced = true;
                        h.announced();
                    } else if started {
                        let moved = s.metered.confirm_start(h.meter_from());
                        handshake = None;
                        info!(waited_ms = waited.as_millis() as u64, moved_ms = moved.as_millis() as u64,
                            "the user's client has `started`, late: the meter counts from its receipt less the lead");
                    } else {
                        info!(waited_ms = waited.as_millis() as u64, "the user's client has `started`; the meter runs");
                        let since = h.meter_from();
                        handshake = None;
                        started = true;
                        begin(room, (since, true), &s, media_down || resuming, &voice, unheard.take()).await;
                    }
                }
                Some(RoomEvent::TextStream(_)) if !started => info!("typed turn dropped: the session has not started"),
                Some(RoomEvent::TextStream(text)) => match (conventions::typed_turn(&s.identity, &text), &voice) {
                    (Some(_), Some(_)) if typed_at.is_some_and(|at| at.elapsed() < TYPED_TURN_GAP) => {
                        metrics::counter!("mindbot_voice_typed_turns_dropped_total").increment(1);
                        info!("typed turn dropped: under a second after the last one");
                    }
                    (Some(turn), Some(v)) => {
                        typed_at = Some(Instant::now());
                        v.typed(turn);
                    }
                    (Some(_), None) => info!("typed turn not answered: voice is off"),
                    (None, _) => {}
                },
                Some(RoomEvent::ParticipantLeft { identity, .. }) if identity == s.identity => {
                    let not_charged = s.metered.pause_from_last_heard(Pause::UserLeft);
                    if !not_charged.is_zero() {
                        metrics::counter!("mindbot_late_leaves_total").increment(1);
                        // How late their last audio reached us (a queue on the way).
                        let audio_delay_ms = room.audio_heard().last_delay(&s.identity).map(|d| d.as_millis() as u64);
                        info!(not_charged_ms = not_charged.as_millis() as u64, ?audio_delay_ms,
                            "the user's leave came after their audio had stopped: not charged from there");
                    } else {
                        // Audio long stopped (or never heard), yet nothing taken
                        // back: the meter did not take that packet as a sign (it
                        // came before a resume, or past the hold), or there was
                        // none. Kept in the log to tell the cases apart.
                        let heard = room.audio_heard();
                        let ago = heard.last_arrival(&s.identity).map(|t| t.elapsed());
                        if ago.is_none_or(|ago| ago > metering::meter::state::QUIET * 2) {
                            let ms = |d: Duration| d.as_millis() as u64;
                            info!(last_audio_ms_ago = ago.map(ms), captured_ms_ago = heard.last(&s.identity).map(|t| ms(t.elapsed())),
                                "the user's leave came long after their audio stopped, or with none heard, and was charged to now");
                        }
                    }
                    grace_at = Instant::now() + ctx.user_grace;
                    // A handshake under way starts over when they are back.
                    handshake = None;
                }
                // Our own media is down (the node carrying the room went, say):
                // the user hears no agent, so nothing is charged until it is back.
                // The same while our signaling connection resumes: the node may
                // have gone with the room (a resume that fails ends the room).
                Some(RoomEvent::ConnectionState(state)) => {
                    let was_up = !media_down && !resuming;
                    match state {
                        ConnectionState::MediaDown => media_down = true,
                        ConnectionState::MediaUp => media_down = false,
                        ConnectionState::Reconnecting => resuming = true,
                        ConnectionState::Reconnected => resuming = false,
                    }
                    let up = !media_down && !resuming;
                    if was_up && !up {
                        let not_charged = s.metered.pause_from_last_heard(Pause::Interrupted);
                        warn!(?state, not_charged_ms = not_charged.as_millis() as u64, "connection interrupted: charging paused");
                    } else if !was_up && up && grace_at == far && started {
                        s.metered.resume_after_break();
                        info!("connection back: charging resumed");
                    }
                }
                Some(RoomEvent::ParticipantActive { identity, sid }) if identity == s.identity => {
                    grace_at = far;
                    user_sid = Some(sid);
                    if started {
                        if !media_down && !resuming {
                            s.metered.resume();
                        }
                    } else if handshake.is_none() {
                        handshake = Some(match announced {
                            false => Handshake::begin(ctx.ready_wait),
                            true => Handshake::confirming(ctx.ready_wait),
                        });
                    }
                }
                Some(RoomEvent::AudioTrackSubscribed { participant, stream, track_sid }) if participant == s.identity => {
                    conventions.user_track(&track_sid);
                    match &voice {
                        Some(v) if started => v.hear(stream),
                        Some(_) => unheard = Some(stream),
                        None => {}
                    }
                }
                Some(RoomEvent::Disconnected { reason }) => {
                    // Out of the room: charged to the moment (or shortly after
                    // the user's audio stopped, if that came first).
                    s.metered.pause_from_last_heard(Pause::UserLeft);
                    break disconnect_reason(reason);
                }
                None => break EndReason::Error,
                Some(_) => {}
            },
        }
    };
    // Charging stops first; then the reason reaches a user still in the room
    // before the agent leaves it (as at zero balance; a frontend shows it).
    if tell_user && grace_at == far {
        s.metered.stop(None);
        send(room, TOPIC_SESSION, &s.identity, &json!({"type": "ended", "reason": reason.as_str()})).await;
        tokio::time::sleep(REASON_LEAD).await;
    }
    let id = s.metered.id();
    // The voice stops first, so the last provider calls are in the totals
    // (written after the close: the close is not delayed by it).
    drop(voice);
    let closed = s.metered.close(reason).await;
    // Counted as the row closes, so a scrape agrees with the database.
    metrics::counter!("mindbot_sessions_ended_total", "persona" => s.slug.clone(), "reason" => reason.as_str())
        .increment(1);
    match closed {
        Ok(v) => {
            let persona = s.slug.clone();
            metrics::counter!("mindbot_billed_seconds_total", "persona" => persona.clone())
                .increment(v.duration_seconds.unwrap_or(0).max(0) as u64);
            let charged: i64 = sqlx::query_scalar!("SELECT charged_ms FROM voice_sessions WHERE id = $1", id.0)
                .fetch_one(&ctx.pool)
                .await
                .unwrap_or(0);
            ctx.metrics.add_charged(&persona, charged.max(0) as u64);
            info!(session = %id, user = %s.user, reason = %reason, duration_seconds = ?v.duration_seconds,
            cost_minutes = ?v.cost_minutes, "session ended");
        }
        Err(e) => {
            if matches!(e, metering::Error::Database(_)) {
                database_error("close");
            }
            warn!(session = %id, reason = %reason, error = %e, "session end not recorded")
        }
    }
    if grace_at != far && reason != EndReason::RoomClosed {
        close_empty_room(ctx, room).await;
    }
    // What LiveKit's frontends read ends with what was queued (briefly).
    conventions.finish(Duration::from_secs(1)).await;
    save_usage(ctx, id, &usage).await;
    for r in usage.rows() {
        let c = &r.counters;
        info!(session = %id, stage = %r.stage, provider = %r.provider, stt_audio_ms = c.stt_audio_ms,
            llm_prompt_tokens = c.llm_prompt_tokens, llm_completion_tokens = c.llm_completion_tokens,
            tts_characters = c.tts_characters, "provider usage");
    }
    reason
}

/// A question to the server whether the user is still in the room: the sid
/// asked about, and the answer (see [`still_listed`]).
type RollCall<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = (String, Option<bool>)> + Send + 'a>>;

/// Whether the server lists `identity` in `room` as participant `sid`
/// (`None`: it could not tell in time), with that sid.
async fn still_listed(rooms: &RoomClient, room: String, identity: String, sid: String) -> (String, Option<bool>) {
    let listed = list_participants(rooms, &room).await.map(|listed| {
        listed.iter().any(|p| {
            p.identity == identity
                && p.sid == sid
                && p.state != livekit_protocol::participant_info::State::Disconnected as i32
        })
    });
    (sid, listed)
}

/// The participants the server lists in `room`, asked with a 5 s bound
/// (`None`, logged, when it did not answer in time or refused).
async fn list_participants(rooms: &RoomClient, room: &str) -> Option<Vec<livekit_protocol::ParticipantInfo>> {
    match tokio::time::timeout(Duration::from_secs(5), rooms.list_participants(room)).await {
        Ok(Ok(listed)) => Some(listed),
        Ok(Err(e)) => {
            debug!(error = %e, "the room's participants could not be listed");
            None
        }
        Err(_) => {
            debug!("listing the room's participants timed out");
            None
        }
    }
}

/// A session that ended while its user was away leaves the agent alone in
/// the room. LiveKit dispatches an agent when a room is created, not when a
/// user comes back to one, so a user returning before the empty room times
/// out would find no agent. Deleting the room (when nobody else is in it)
/// makes their return create a new room, and with it a new dispatch.
async fn close_empty_room(ctx: &Context, room: &Room) {
    const LIMIT: Duration = Duration::from_secs(5);
    let name = room.name();
    let Some(listed) = list_participants(&ctx.rooms, name).await else {
        return debug!("room not deleted: its participants could not be listed");
    };
    if let Some(other) = listed.iter().find(|p| p.identity != room.identity()) {
        return debug!(participant = %other.identity, "room kept: someone is in it");
    }
    match tokio::time::timeout(LIMIT, ctx.rooms.delete_room(name)).await {
        Ok(Ok(())) => info!("room deleted: the session ended while its user was away"),
        Ok(Err(e)) => warn!(error = %e, "empty room not deleted"),
        Err(_) => warn!("empty room not deleted: the server did not answer"),
    }
}

/// The voice pipeline's next report (never, without voice).
async fn next_report(voice: &mut Option<crate::voice::VoiceHandle>) -> Option<VoiceEvent> {
    match voice {
        Some(v) => v.next_event().await,
        None => std::future::pending().await,
    }
}

/// Writes the session's provider usage if it changed (bounded: a slow
/// database must not hold the session's loop); a failure is logged and the
/// next write carries the same totals.
async fn save_usage(ctx: &Context, id: metering::SessionId, usage: &SessionUsage) {
    let Some(rows) = usage.take_changed() else { return };
    let saved = tokio::time::timeout(Duration::from_secs(2), crate::usage::save(&ctx.pool, id, &rows)).await;
    match saved {
        Ok(Ok(())) => debug!(session = %id, rows = rows.len(), "provider usage saved"),
        Ok(Err(e)) => {
            database_error("usage");
            usage.mark_changed();
            warn!(session = %id, error = %e, "provider usage not saved; retried at the next write");
        }
        Err(_) => {
            database_error("usage");
            usage.mark_changed();
            warn!(session = %id, "provider usage write timed out; retried at the next write");
        }
    }
}

/// The end reason for the agent's own disconnection from the room.
fn disconnect_reason(reason: DisconnectReason) -> EndReason {
    match reason {
        DisconnectReason::ParticipantRemoved => EndReason::AgentRemoved,
        DisconnectReason::RoomDeleted | DisconnectReason::RoomClosed => EndReason::RoomClosed,
        DisconnectReason::ServerShutdown => EndReason::Shutdown,
        _ => EndReason::Error,
    }
}

/// LiveKit terminated the job: the room usually says why within a moment
/// (deleted, or the agent removed); if it does not, the server took the job
/// away while the room goes on, which for the user is the agent removed.
async fn termination_reason(events: &mut RoomEvents) -> EndReason {
    let deadline = Instant::now() + TERMINATION_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(RoomEvent::Disconnected { reason })) => return disconnect_reason(reason),
            Ok(Some(_)) => {}
            Ok(None) => return EndReason::RoomClosed,
            Err(_) => return EndReason::AgentRemoved,
        }
    }
}

/// Removes the user (or deletes the room) through the server API and waits
/// to see them gone, retrying with backoff. Charging has already stopped.
async fn hang_up(ctx: &Context, room: &Room, events: &mut RoomEvents, user: &str) {
    let started = std::time::Instant::now();
    // Let the reason just sent reach the user before they are removed (the
    // meter stopped charging at the exhaustion instant already).
    tokio::time::sleep(REASON_LEAD).await;
    for attempt in 0..4u32 {
        let call = match ctx.hangup {
            HangUp::RemoveParticipant => ctx.rooms.remove_participant(room.name(), user).await,
            HangUp::DeleteRoom => ctx.rooms.delete_room(room.name()).await,
        };
        if let Err(e) = &call {
            warn!(error = %e, attempt, "hang-up request failed");
        }
        let gone = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(e) = events.recv().await {
                match e {
                    RoomEvent::ParticipantLeft { identity, .. } if identity == user => return true,
                    RoomEvent::Disconnected { .. } => return true,
                    _ => {}
                }
            }
            true
        })
        .await
        .unwrap_or(false);
        if gone {
            metrics::histogram!("mindbot_hangup_latency_seconds").record(started.elapsed().as_secs_f64());
            info!(user, elapsed_ms = started.elapsed().as_millis() as u64, "hung up");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
    }
    warn!(user, "hang-up not confirmed");
}
