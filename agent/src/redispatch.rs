//! Dispatches that never reached a worker are made again.
//!
//! LiveKit dispatches the agent once, when the room is created (the user's
//! token carries the dispatch). If no worker takes that job then (every
//! worker full or draining, or the workers of a LiveKit node that just went
//! still reconnecting), LiveKit logs it and never tries again: the user
//! waits in a room without an agent. A dispatch that got a job lists it in
//! its state; one that did not has none.
//!
//! So every `worker.redispatch_seconds` one worker of the fleet (a
//! PostgreSQL advisory lock picks it) lists the rooms with someone in them,
//! leaves out those with an open session, and for each of the rest whose
//! dispatches of our agent are all older than the interval and have no job,
//! creates the same dispatch again (same agent name and metadata, which the
//! token had signed). A room gets at most [`MAX_AGAIN`] of them, then a
//! warning. Rooms whose dispatch did get a job (a session that ran, was
//! refused or hung up) are never dispatched again here.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use livekit_api::services::agent_dispatch::AgentDispatchClient;
use livekit_api::services::room::RoomClient;
use livekit_protocol::{AgentDispatch, CreateAgentDispatchRequest};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Dispatches made again for one room, at most (then it is left, with a warning).
pub const MAX_AGAIN: usize = 6;

/// The advisory lock the fleet's sweeps share (one sweeps at a time).
const LOCK_KEY: i64 = 0x6d69_6e64_6264_7370; // "mindbdsp"

pub struct Redispatch {
    pub pool: PgPool,
    pub rooms: RoomClient,
    pub dispatches: AgentDispatchClient,
    pub agent_name: String,
    pub every: Duration,
}

impl Redispatch {
    /// Sweeps every `every` until `stop`; a failed sweep is logged and the
    /// next one tries again.
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            // The sweep holds the fleet's lock (a transaction) over its calls
            // to LiveKit: it gets one interval at most.
            match tokio::time::timeout(self.every, self.sweep()).await {
                Ok(Ok(rooms)) if !rooms.is_empty() => {
                    tracing::info!(?rooms, "dispatched again: no worker had taken their job")
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "dispatch sweep failed"),
                Err(_) => {
                    tracing::warn!(every = ?self.every, "dispatch sweep took longer than its interval; cut short")
                }
            }
        }
    }

    /// One sweep (see the module's documentation): the rooms dispatched
    /// again (none when another worker holds the sweep).
    pub async fn sweep(&self) -> Result<Vec<String>> {
        let mut tx = self.pool.begin().await.context("starting the dispatch sweep")?;
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut *tx)
            .await
            .context("taking the dispatch sweep's lock")?;
        if !held {
            return Ok(Vec::new());
        }
        let now_ns = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as i64;
        let old_ns = self.every.as_nanos() as i64;
        let rooms = self.rooms.list_rooms(Vec::new()).await.context("listing rooms")?;
        let occupied: Vec<String> = rooms
            .into_iter()
            .filter(|r| r.num_participants > 0 && now_ns - r.creation_time_ms * 1_000_000 >= old_ns)
            .map(|r| r.name)
            .collect();
        let open: HashSet<String> = sqlx::query_scalar::<_, Option<String>>(
            "SELECT DISTINCT room_name FROM voice_sessions WHERE status = 'active' AND room_name = ANY($1)",
        )
        .bind(&occupied)
        .fetch_all(&mut *tx)
        .await
        .context("reading the rooms' open sessions")?
        .into_iter()
        .flatten()
        .collect();
        let mut dispatched = Vec::new();
        for room in occupied.iter().filter(|r| !open.contains(*r)) {
            let ours: Vec<AgentDispatch> = match self.dispatches.list_dispatch(room.as_str()).await {
                Ok(all) => all.into_iter().filter(|d| d.agent_name == self.agent_name).collect(),
                Err(e) => {
                    tracing::warn!(%room, error = %e, "could not list the room's dispatches");
                    continue;
                }
            };
            let Some(again) = lost(&ours, now_ns, old_ns) else { continue };
            if ours.len() > MAX_AGAIN {
                tracing::warn!(%room, dispatches = ours.len(), "no worker took this room's job; not dispatched again");
                continue;
            }
            let req = CreateAgentDispatchRequest {
                agent_name: again.agent_name.clone(),
                room: room.clone(),
                metadata: again.metadata.clone(),
                ..Default::default()
            };
            match self.dispatches.create_dispatch(req).await {
                Ok(_) => {
                    metrics::counter!("mindbot_redispatches_total").increment(1);
                    dispatched.push(room.clone());
                }
                Err(e) => tracing::warn!(%room, error = %e, "could not dispatch again"),
            }
        }
        tx.commit().await.context("ending the dispatch sweep")?;
        Ok(dispatched)
    }
}

/// The dispatch to make again, when our agent's dispatches of a room all
/// lack a job and are all at least `old_ns` old: the first one (the
/// token's, whose metadata the others copy).
fn lost(ours: &[AgentDispatch], now_ns: i64, old_ns: i64) -> Option<&AgentDispatch> {
    let waited =
        |d: &AgentDispatch| d.state.as_ref().is_some_and(|s| s.jobs.is_empty() && now_ns - s.created_at >= old_ns);
    if ours.is_empty() || !ours.iter().all(waited) {
        return None;
    }
    ours.iter().min_by_key(|d| d.state.as_ref().map_or(i64::MAX, |s| s.created_at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use livekit_protocol::{AgentDispatchState, Job};

    fn dispatch(created_s: i64, jobs: usize, metadata: &str) -> AgentDispatch {
        AgentDispatch {
            agent_name: "mindbot".into(),
            metadata: metadata.into(),
            state: Some(AgentDispatchState {
                jobs: vec![Job::default(); jobs],
                created_at: created_s * 1_000_000_000,
                deleted_at: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_room_whose_dispatches_all_waited_without_a_job_is_dispatched_again() {
        let s = 1_000_000_000;
        let now = 100 * s;
        let every = 10 * s;
        assert_eq!(lost(&[], now, every), None, "not our agent's room");
        assert_eq!(lost(&[dispatch(95, 0, "a")], now, every), None, "too young: LiveKit may still be trying");
        assert_eq!(lost(&[dispatch(80, 1, "a")], now, every), None, "a worker took it (the session may have ended)");
        assert_eq!(lost(&[dispatch(70, 0, "a"), dispatch(85, 1, "a")], now, every), None, "taken the second time");
        assert_eq!(lost(&[dispatch(70, 0, "a"), dispatch(95, 0, "a")], now, every), None, "the last one is young");
        let two = [dispatch(85, 0, "again"), dispatch(70, 0, "token")];
        assert_eq!(lost(&two, now, every).map(|d| d.metadata.as_str()), Some("token"));
        let no_state = AgentDispatch { agent_name: "mindbot".into(), ..Default::default() };
        assert_eq!(lost(&[no_state], now, every), None);
    }
}
