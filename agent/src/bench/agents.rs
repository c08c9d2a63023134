//! `bench agents`: our worker (`mindbot-agent run`, on a benchmark database
//! of its own) against the smallest worker of LiveKit's Python agents
//! framework (`tests/agents/minimal_agent.py`), one after the other, on the
//! same LiveKit server and the same kind of rooms and users:
//! 1. dispatch to agent in the room: a user waits in a room, the server API
//!    dispatches the agent, and the server's participant list is polled
//!    every 5 ms until the agent is active (media connected); rooms one at a
//!    time; also when the user was told of the agent;
//! 2. hang-up: users whose balance lasts S seconds (ours: a card of S s at
//!    1x; theirs: the dispatch asks it to hang up S s after the user is
//!    there), from the instant the agent's own clock ran out (ours: the
//!    meter's log line; theirs: the time in its "ended" message) to the
//!    server ending the user's connection, as the user sees it;
//! 3. N concurrent sessions: RSS, PSS and CPU of the worker's whole process
//!    tree over a window, divided by the sessions.
//!
//! Both hang-ups send the user the reason, wait 300 ms for it to arrive, and
//! remove the user through the server API. Figures are printed, never
//! asserted.

mod contender;
mod procs;
mod users;

use std::process::ExitCode;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use mindbot_agent::room::DisconnectReason;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::task::JoinSet;

use crate::config::Config;
use contender::{Contender, Kind};
use procs::TreeSample;
use users::{Server, User};

/// Sizes of `bench agents`.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentsArgs {
    /// Rooms dispatched one at a time for the dispatch-to-joined latency.
    #[arg(long, default_value_t = 20)]
    rooms: usize,
    /// Sessions that run out of balance, for the hang-up latency.
    #[arg(long, default_value_t = 20)]
    hangups: usize,
    /// Balance of each hang-up session, in seconds at 1x.
    #[arg(long, default_value_t = 5)]
    balance_seconds: u64,
    /// Concurrent sessions for the RSS and CPU figures.
    #[arg(long, default_value_t = 50)]
    sessions: usize,
    /// Length of the RSS / CPU sampling window, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Users publish nothing (by default each publishes a 440 Hz tone, as a microphone would).
    #[arg(long)]
    silent_users: bool,
    /// Measure one worker only.
    #[arg(long, value_enum)]
    only: Option<Only>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Only {
    Mindbot,
    LivekitAgents,
}

/// The persona of every benchmark session: rate 1x, free access.
const PERSONA: &str = "professor-ada";

/// Everything measured for one worker.
#[derive(Debug, Default)]
struct Figures {
    /// Dispatch to agent active, ms.
    active: Vec<f64>,
    /// Dispatch to the user told of the agent, ms.
    told: Vec<f64>,
    join_missed: usize,
    /// Clock run out to user gone, ms.
    hangup: Vec<f64>,
    hangup_failed: usize,
    idle: TreeSample,
    load: Option<Load>,
}

#[derive(Debug, Default)]
struct Load {
    sessions: usize,
    /// Means over the window.
    rss: f64,
    pss: f64,
    /// Cores used over the window.
    cores: f64,
    processes: usize,
    present_at_end: usize,
}

pub async fn agents(config: &Config, args: AgentsArgs) -> Result<ExitCode> {
    anyhow::ensure!(
        args.rooms > 0 && args.hangups > 0 && args.sessions > 0 && args.seconds > 0 && args.balance_seconds > 0,
        "--rooms, --hangups, --sessions, --seconds and --balance-seconds must be positive"
    );
    let kinds: Vec<Kind> = match args.only {
        Some(Only::Mindbot) => vec![Kind::Mindbot],
        Some(Only::LivekitAgents) => vec![Kind::LivekitAgents],
        None => vec![Kind::Mindbot, Kind::LivekitAgents],
    };
    if kinds.contains(&Kind::LivekitAgents) {
        let script = contender::root().join("scripts/python-env.sh");
        let ok = std::process::Command::new("bash").arg(&script).arg("agents").status().is_ok_and(|s| s.success());
        anyhow::ensure!(ok, "`bash {} agents` failed", script.display());
    }
    let (opts, db_name) = super::meter::scratch_database(config).await?;
    let database_url = match config.database.url.expose().rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db_name}"),
        None => anyhow::bail!("database.url has no database name"),
    };
    println!(
        "bench agents: {} rooms one at a time, {} hang-ups after {} s, {} concurrent sessions sampled for {} s; \
         users {}; database {db_name}",
        args.rooms,
        args.hangups,
        args.balance_seconds,
        args.sessions,
        args.seconds,
        if args.silent_users { "silent" } else { "publish a tone" },
    );
    let measured = async {
        let pool = PgPoolOptions::new().max_connections(4).connect_with(opts).await?;
        metering::MIGRATOR.run(&pool).await.context("migrating the benchmark database")?;
        let mut all = Vec::new();
        for kind in kinds {
            let figures = measure(config, &args, kind, &pool, &database_url).await?;
            all.push((kind, figures));
        }
        pool.close().await;
        Ok::<_, anyhow::Error>(all)
    };
    // Ctrl-C stops the workers (dropped) and still drops the database.
    let result = tokio::select! {
        r = measured => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Err(e) = super::meter::drop_database(config, &db_name).await {
        eprintln!("could not drop benchmark database {db_name}: {e}");
    }
    let all = result?;
    print_table(&args, &all);
    Ok(ExitCode::SUCCESS)
}

/// Funded users: `n` users each with one active card of `balance_ms`.
async fn seed_users(pool: &PgPool, n: usize, balance_ms: i64) -> Result<Vec<String>> {
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO users (email, full_name, password_hash) \
         SELECT 'agents-' || gen_random_uuid() || '@bench.invalid', 'Bench user', 'x' FROM generate_series(1, $1) \
         RETURNING id",
    )
    .bind(n as i64)
    .fetch_all(pool)
    .await
    .context("creating benchmark users")?;
    // A card bought for whole minutes with `balance_ms` left on it.
    sqlx::query(
        "INSERT INTO time_cards (user_id, activation_code, total_minutes, remaining_minutes, remaining_sub_ms, \
         status, activated_at) \
         SELECT u, 'BENCH-' || u, GREATEST(($2 + 59999) / 60000, 1), $2 / 60000, $2 % 60000, 'active', NOW() \
         FROM UNNEST($1::uuid[]) u",
    )
    .bind(&ids)
    .bind(balance_ms)
    .execute(pool)
    .await
    .context("funding benchmark users")?;
    Ok(ids.iter().map(ToString::to_string).collect())
}

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

async fn measure(config: &Config, args: &AgentsArgs, kind: Kind, pool: &PgPool, db_url: &str) -> Result<Figures> {
    let long = 3_600_000; // an hour: never runs out during the benchmark
    let join_users = seed_users(pool, args.rooms, long).await?;
    let hangup_users = seed_users(pool, args.hangups, args.balance_seconds as i64 * 1000).await?;
    let load_users = seed_users(pool, args.sessions, long).await?;
    let max_jobs = args.rooms.max(args.hangups).max(args.sessions) + 5;
    let mut c = Contender::start(kind, config, db_url, max_jobs).await?;
    let server = Server::new(config);
    let mut f = Figures::default();
    let run = async {
        join_phase(config, args, &c, &server, &join_users, &mut f).await?;
        hangup_phase(config, args, &c, &server, &hangup_users, &mut f).await?;
        load_phase(config, args, &c, &server, &load_users, &mut f).await
    }
    .await;
    if let Err(e) = &run {
        eprintln!("{} failed: {e:#}\nits last log lines:\n{}", kind.label(), c.tail());
    }
    c.stop().await;
    run.map(|()| f)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn join_phase(
    config: &Config,
    args: &AgentsArgs,
    c: &Contender,
    server: &Server,
    ids: &[String],
    f: &mut Figures,
) -> Result<()> {
    for (i, id) in ids.iter().enumerate() {
        let room = format!("bench-{}-{}-join-{i}", std::process::id(), c.kind.label());
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
    println!(
        "{}: dispatch -> agent active p50 {:.0} ms, p99 {:.0} ms over {} rooms ({} never joined)",
        c.kind.label(),
        percentile(&f.active, 0.5),
        percentile(&f.active, 0.99),
        f.active.len(),
        f.join_missed
    );
    Ok(())
}

async fn hangup_phase(
    config: &Config,
    args: &AgentsArgs,
    c: &Contender,
    server: &Server,
    ids: &[String],
    f: &mut Figures,
) -> Result<()> {
    let limit = Duration::from_secs(args.balance_seconds + 40);
    let mut waits = JoinSet::new();
    let mut rooms = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let room = format!("bench-{}-{}-hangup-{i}", std::process::id(), c.kind.label());
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
    println!(
        "{}: hang-up p50 {:.0} ms, p99 {:.0} ms over {} sessions ({} not hung up)",
        c.kind.label(),
        percentile(&f.hangup, 0.5),
        percentile(&f.hangup, 0.99),
        f.hangup.len(),
        f.hangup_failed
    );
    Ok(())
}

async fn load_phase(
    config: &Config,
    args: &AgentsArgs,
    c: &Contender,
    server: &Server,
    ids: &[String],
    f: &mut Figures,
) -> Result<()> {
    tokio::time::sleep(Duration::from_secs(2)).await; // earlier jobs wind down
    f.idle = procs::sample(c.pid());
    let started = Instant::now();
    let joined: Vec<Result<User>> = futures_util::stream::iter(ids.iter().enumerate())
        .map(|(i, id)| async move {
            let room = format!("bench-{}-{}-load-{i}", std::process::id(), c.kind.label());
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
    let first = procs::sample(c.pid());
    let t0 = Instant::now();
    let (mut rss, mut pss, mut last) = (0.0, 0.0, first);
    for _ in 0..args.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        last = procs::sample(c.pid());
        rss += last.rss as f64;
        pss += last.pss as f64;
    }
    let wall = t0.elapsed().as_secs_f64();
    let n = args.seconds as f64;
    let present_at_end = count_present(server, &rooms).await;
    let load = Load {
        sessions: present,
        rss: rss / n,
        pss: pss / n,
        cores: (last.cpu_seconds - first.cpu_seconds) / wall,
        processes: last.processes,
        present_at_end,
    };
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

/// Rooms whose agent is active now.
async fn count_present(server: &Server, rooms: &[String]) -> usize {
    futures_util::stream::iter(rooms.iter())
        .map(|r| server.agent_active(r))
        .buffer_unordered(8)
        .filter(|present| std::future::ready(*present))
        .count()
        .await
}

/// Nearest-rank percentile of unsorted samples (NaN when there are none).
fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// One table row: a label and how to read it from a worker's figures.
type Row = (String, fn(&Figures) -> Option<f64>, &'static str);

fn rows(args: &AgentsArgs) -> Vec<Row> {
    let n = args.sessions;
    vec![
        ("dispatch -> agent active, p50".into(), |f| p(&f.active, 0.5), "ms"),
        ("dispatch -> agent active, p99".into(), |f| p(&f.active, 0.99), "ms"),
        ("dispatch -> user told of agent, p50".into(), |f| p(&f.told, 0.5), "ms"),
        (format!("hang-up latency, p50 ({} sessions)", args.hangups), |f| p(&f.hangup, 0.5), "ms"),
        (format!("hang-up latency, p99 ({} sessions)", args.hangups), |f| p(&f.hangup, 0.99), "ms"),
        (format!("RSS per session at {n} (tree / sessions)"), |f| load(f, |l, _| l.rss / 1e6), "MB"),
        (format!("RSS per session at {n}, above idle"), |f| load(f, |l, i| (l.rss - i.rss as f64) / 1e6), "MB"),
        (format!("PSS per session at {n} (tree / sessions)"), |f| load(f, |l, _| l.pss / 1e6), "MB"),
        (format!("PSS per session at {n}, above idle"), |f| load(f, |l, i| (l.pss - i.pss as f64) / 1e6), "MB"),
        (format!("CPU per session at {n}"), |f| load(f, |l, _| l.cores * 100.0), "% core"),
    ]
}

fn p(samples: &[f64], q: f64) -> Option<f64> {
    (!samples.is_empty()).then(|| percentile(samples, q))
}

fn load(f: &Figures, v: fn(&Load, &TreeSample) -> f64) -> Option<f64> {
    f.load.as_ref().map(|l| v(l, &f.idle) / l.sessions.max(1) as f64)
}

fn print_table(args: &AgentsArgs, all: &[(Kind, Figures)]) {
    let get = |kind: Kind| all.iter().find(|(k, _)| *k == kind).map(|(_, f)| f);
    let (ours, theirs) = (get(Kind::Mindbot), get(Kind::LivekitAgents));
    println!();
    println!("{:<46} {:>10} {:>15} {:>8}", "metric", "mindbot", "livekit-agents", "ratio");
    for (label, read, unit) in rows(args) {
        let a = ours.and_then(read);
        let b = theirs.and_then(read);
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        let ratio = match (a, b) {
            (Some(a), Some(b)) if a > 0.0 => format!("{:.1}x", b / a),
            _ => "-".to_string(),
        };
        println!("{:<46} {:>10} {:>15} {:>8}", format!("{label} ({unit})"), cell(a), cell(b), ratio);
    }
    for (kind, f) in all {
        if let Some(l) = &f.load {
            println!(
                "{}: {} of {} sessions up, {} with their agent at the end; {} processes; idle before: {:.1} MB RSS in {} \
                 processes; {} joins and {} hang-ups failed",
                kind.label(),
                l.sessions,
                args.sessions,
                l.present_at_end,
                l.processes,
                f.idle.rss as f64 / 1e6,
                f.idle.processes,
                f.join_missed,
                f.hangup_failed,
            );
        }
    }
    println!("ratio = livekit-agents / mindbot; p99 of 20 samples is their maximum");
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 10.0);
        assert_eq!(percentile(&v, 0.99), 20.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
