//! The three measurements of `bench agents`, each against one running
//! worker: dispatch to agent active (rooms one at a time), hang-up latency
//! (sessions whose balance runs out, staggered), and the worker's process
//! tree at N concurrent sessions.

use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use mindbot_transport::room::DisconnectReason;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::contender::{Contender, Kind};
use super::procs;
use super::users::{Server, User};
use super::{AgentsArgs, Figures, Load, PERSONA};
use crate::config::Config;

/// The dispatch metadata each worker understands.
fn metadata(kind: Kind, user: &str, hangup_after: Option<u64>) -> Value {
    match kind {
        Kind::Mindbot => json!({"user_id": user, "persona": PERSONA}),
        Kind::LivekitAgents => match hangup_after {
            Some(s) => json!({"user_id": user, "hangup_after": s}),
            None => json!({"user_id": user}),
        },
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What every phase of one contender's run works with.
pub(super) struct Phases<'a> {
    pub config: &'a Config,
    pub args: &'a AgentsArgs,
    pub c: &'a Contender,
    pub server: &'a Server,
}

impl Phases<'_> {
    /// A new room for the `i`th user of `phase`.
    fn room(&self, phase: &str, i: usize) -> String {
        format!("bench-{}-{}-{phase}-{i}", std::process::id(), self.c.kind.label())
    }

    /// Prints p50 and p99 of `samples` (ms) and how many `missed` had none.
    fn print_latency(&self, what: &str, samples: &[f64], of: &str, missed: usize, missing: &str) {
        println!(
            "{}: {what} p50 {:.0} ms, p99 {:.0} ms over {} {of} ({missed} {missing})",
            self.c.kind.label(),
            super::percentile(samples, 0.5),
            super::percentile(samples, 0.99),
            samples.len(),
        );
    }

    pub(super) async fn join(&self, ids: &[String], f: &mut Figures) -> Result<()> {
        let Phases { config, args, c, server } = *self;
        for (i, id) in ids.iter().enumerate() {
            let room = self.room("join", i);
            let user = User::join(config, &room, id, !args.silent_users).await?;
            let t0 = Instant::now();
            server.dispatch(&room, &c.agent_name, &metadata(c.kind, id, None)).await?;
            match server.wait_agent_active(&room, Duration::from_millis(5), Duration::from_secs(20)).await {
                Some(t) => f.active.push(ms(t - t0)),
                None => f.join_missed += 1,
            }
            // The server announces a participant that publishes nothing within ~3 s.
            if let Some(t) = user.wait_agent(Duration::from_secs(4)).await {
                f.told.push(ms(t.saturating_duration_since(t0)));
            }
            server.delete_room(&room).await;
            user.leave().await;
            tokio::time::sleep(Duration::from_millis(300)).await; // the job winds down before the next
        }
        self.print_latency("dispatch -> agent active", &f.active, "rooms", f.join_missed, "never joined");
        Ok(())
    }

    pub(super) async fn hangup(&self, ids: &[String], f: &mut Figures) -> Result<()> {
        let Phases { config, args, c, server } = *self;
        let limit = Duration::from_secs(args.balance_seconds + 40);
        let mut waits = JoinSet::new();
        let mut rooms = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let room = self.room("hangup", i);
            let user = User::join(config, &room, id, !args.silent_users).await?;
            server.dispatch(&room, &c.agent_name, &metadata(c.kind, id, Some(args.balance_seconds))).await?;
            rooms.push(room);
            waits.spawn(async move {
                let gone = user.wait_gone(limit).await;
                let seen = user.seen();
                let id = user.identity.clone();
                user.leave().await;
                (id, gone, seen)
            });
            // Staggered, so that hang-ups do not all fall in the same instant.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        while let Some(done) = waits.join_next().await {
            let (id, gone, seen) = done.context("a hang-up waiter panicked")?;
            let clock_out = match c.kind {
                Kind::Mindbot => c.exhausted_at(&id).map(|t| t.timestamp_micros() as f64 / 1e6),
                Kind::LivekitAgents => seen.ended_at,
            };
            match (gone, clock_out) {
                (Some((at, DisconnectReason::ParticipantRemoved | DisconnectReason::RoomDeleted)), Some(out)) => {
                    let gone_s = at.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
                    f.hangup.push((gone_s - out) * 1000.0);
                }
                _ => f.hangup_failed += 1,
            }
        }
        for room in &rooms {
            server.delete_room(room).await;
        }
        self.print_latency("hang-up", &f.hangup, "sessions", f.hangup_failed, "not hung up");
        Ok(())
    }

    pub(super) async fn load(&self, ids: &[String], f: &mut Figures) -> Result<()> {
        let Phases { config, args, c, server } = *self;
        tokio::time::sleep(Duration::from_secs(2)).await; // earlier jobs wind down
        f.idle = procs::sample(c.pid());
        let started = Instant::now();
        let joined: Vec<Result<User>> = futures_util::stream::iter(ids.iter().enumerate())
            .map(|(i, id)| async move {
                let room = self.room("load", i);
                let user = User::join(config, &room, id, !args.silent_users).await?;
                server.dispatch(&room, &c.agent_name, &metadata(c.kind, id, None)).await?;
                if server.wait_agent_active(&room, Duration::from_millis(50), Duration::from_secs(60)).await.is_none() {
                    eprintln!("{}: no agent in {room} after 60 s", c.kind.label());
                }
                Ok(user)
            })
            .buffer_unordered(4)
            .collect()
            .await;
        let mut users = Vec::new();
        for u in joined {
            match u {
                Ok(u) => users.push(u),
                Err(e) => eprintln!("{}: a load session did not start: {e:#}", c.kind.label()),
            }
        }
        let rooms: Vec<String> = users.iter().map(|u| u.room_name.clone()).collect();
        let present = count_present(server, &rooms).await;
        println!(
            "{}: {present} of {} sessions with their agent after {:.1} s; settling",
            c.kind.label(),
            args.sessions,
            started.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut load = Load::measure(c.pid(), args.window_seconds(), present).await;
        load.present_at_end = count_present(server, &rooms).await;
        let present_at_end = load.present_at_end;
        let per = present.max(1) as f64;
        println!(
            "{}: {} sessions: {:.1} MB RSS ({:.1} MB PSS) in {} processes, {:.1}% of a core; \
         per session {:.2} MB RSS above idle, {:.2}% of a core; {present_at_end} agents still there",
            c.kind.label(),
            present,
            load.rss / 1e6,
            load.pss / 1e6,
            load.processes,
            load.cores * 100.0,
            (load.rss - f.idle.rss as f64) / per / 1e6,
            load.cores * 100.0 / per,
        );
        f.load = Some(load);
        futures_util::stream::iter(rooms.iter()).for_each_concurrent(8, |r| server.delete_room(r)).await;
        futures_util::stream::iter(users).for_each_concurrent(8, |u| u.leave()).await;
        Ok(())
    }
}

/// Rooms whose agent is active now.
pub(super) async fn count_present(server: &Server, rooms: &[String]) -> usize {
    futures_util::stream::iter(rooms.iter())
        .map(|r| server.agent_active(r))
        .buffer_unordered(8)
        .filter(|present| std::future::ready(*present))
        .count()
        .await
}
