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
//! With `--talking N` it measures instead what operators pay for: N
//! concurrent sessions whose users speak and whose agents answer (ours with
//! voice on, theirs `tests/agents/voice_agent.py`), see `talking`.
//!
//! Both hang-ups send the user the reason, wait 300 ms for it to arrive, and
//! remove the user through the server API. Figures are printed, never
//! asserted.

mod contender;
mod phases;
mod procs;
mod speech;
mod talker;
mod talking;
mod users;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::config::Config;
use contender::{Contender, Kind};
use procs::TreeSample;
use users::Server;

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
    /// Length of the RSS / CPU sampling window, in seconds (default 20; 120 with --talking).
    #[arg(long)]
    seconds: Option<u64>,
    /// Talking sessions instead of silent ones: N users each ask a question
    /// (espeak-ng speech), hear the answer, wait --gap-seconds and ask the
    /// next; both agents answer through [voice]'s providers (the local stack,
    /// started if nothing answers there). Measures memory and CPU per talking
    /// session and each turn's latency; the join and hang-up phases are skipped.
    #[arg(long, value_name = "N")]
    talking: Option<usize>,
    /// With --talking: the quiet after an answer (or after waiting for one) before the next question.
    #[arg(long, default_value_t = 5)]
    gap_seconds: u64,
    /// With --talking: how long a user waits for an answer to begin before asking the next question.
    #[arg(long, default_value_t = 60)]
    answer_timeout: u64,
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

impl Load {
    /// Samples the process tree of `pid` once a second for `seconds`: the
    /// means of RSS and PSS and the cores used, with `sessions` present at
    /// the start and `present_at_end` counted by the caller afterwards.
    async fn measure(pid: u32, seconds: u64, sessions: usize) -> Load {
        let first = procs::sample(pid);
        let t0 = std::time::Instant::now();
        let (mut rss, mut pss, mut last) = (0.0, 0.0, first);
        for _ in 0..seconds {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            last = procs::sample(pid);
            rss += last.rss as f64;
            pss += last.pss as f64;
        }
        let n = seconds.max(1) as f64;
        Load {
            sessions,
            rss: rss / n,
            pss: pss / n,
            cores: (last.cpu_seconds - first.cpu_seconds) / t0.elapsed().as_secs_f64(),
            processes: last.processes,
            present_at_end: 0,
        }
    }
}

impl AgentsArgs {
    /// The sampling window, in seconds.
    fn window_seconds(&self) -> u64 {
        self.seconds.unwrap_or(if self.talking.is_some() { 120 } else { 20 })
    }
}

pub async fn agents(config: &Config, args: AgentsArgs) -> Result<ExitCode> {
    anyhow::ensure!(
        args.rooms > 0
            && args.hangups > 0
            && args.sessions > 0
            && args.window_seconds() > 0
            && args.balance_seconds > 0,
        "--rooms, --hangups, --sessions, --seconds and --balance-seconds must be positive"
    );
    anyhow::ensure!(
        args.talking != Some(0) && args.answer_timeout > 0,
        "--talking and --answer-timeout must be positive"
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
    let questions = match args.talking {
        Some(_) => {
            let script = contender::root().join("scripts/local-voice.sh");
            let ok = std::process::Command::new("bash").arg(&script).arg("start").status().is_ok_and(|s| s.success());
            anyhow::ensure!(ok, "`bash {} start` failed", script.display());
            let rendered = speech::render_questions()?;
            Some(Arc::new(rendered.into_iter().map(Arc::new).collect::<Vec<_>>()))
        }
        None => None,
    };
    let (opts, db_name) = super::meter::scratch_database(config).await?;
    let database_url = match config.database.url.expose().rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db_name}"),
        None => anyhow::bail!("database.url has no database name"),
    };
    match args.talking {
        Some(n) => println!(
            "bench agents --talking {n}: {n} concurrent talking sessions ({} questions in turn, {} s after each \
             answer, answers awaited {} s), sampled for {} s; providers: stt {}, llm {}; load average {}; database {db_name}",
            speech::QUESTIONS.len(),
            args.gap_seconds,
            args.answer_timeout,
            args.window_seconds(),
            config.voice.stt.base_url,
            config.voice.llm.base_url,
            talking::load_average(),
        ),
        None => println!(
            "bench agents: {} rooms one at a time, {} hang-ups after {} s, {} concurrent sessions sampled for {} s; \
             users {}; database {db_name}",
            args.rooms,
            args.hangups,
            args.balance_seconds,
            args.sessions,
            args.window_seconds(),
            if args.silent_users { "silent" } else { "publish a tone" },
        ),
    }
    let measured = async {
        let pool = PgPoolOptions::new().max_connections(4).connect_with(opts).await?;
        metering::MIGRATOR.run(&pool).await.context("migrating the benchmark database")?;
        let mut silent = Vec::new();
        let mut talked = Vec::new();
        for kind in kinds {
            match &questions {
                Some(q) => talked.push((kind, talking::measure(config, &args, kind, &pool, &database_url, q).await?)),
                None => silent.push((kind, measure(config, &args, kind, &pool, &database_url).await?)),
            }
        }
        pool.close().await;
        Ok::<_, anyhow::Error>((silent, talked))
    };
    // Ctrl-C stops the workers (dropped) and still drops the database.
    let result = tokio::select! {
        r = measured => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Err(e) = super::meter::drop_database(config, &db_name).await {
        eprintln!("could not drop benchmark database {db_name}: {e}");
    }
    let (silent, talked) = result?;
    match args.talking {
        Some(n) => talking::print_table(n, &talked),
        None => print_table(&args, &silent),
    }
    Ok(ExitCode::SUCCESS)
}

/// Funded users: `n` users each with one active card of `balance_ms`.
async fn seed_users(pool: &PgPool, n: usize, balance_ms: i64) -> Result<Vec<String>> {
    let ids: Vec<metering::UserId> = sqlx::query_scalar!(
        r#"INSERT INTO users (email, full_name, password_hash)
         SELECT 'agents-' || gen_random_uuid() || '@bench.invalid', 'Bench user', 'x' FROM generate_series(1, $1)
         RETURNING id AS "id: metering::UserId""#,
        n as i64
    )
    .fetch_all(pool)
    .await
    .context("creating benchmark users")?;
    // A card of whole minutes with `balance_ms` left on it.
    metering::cards::grant_each(pool, &ids, metering::Millis(balance_ms)).await.context("funding benchmark users")?;
    Ok(ids.iter().map(ToString::to_string).collect())
}

async fn measure(config: &Config, args: &AgentsArgs, kind: Kind, pool: &PgPool, db_url: &str) -> Result<Figures> {
    let long = 3_600_000; // an hour: never runs out during the benchmark
    let join_users = seed_users(pool, args.rooms, long).await?;
    let hangup_users = seed_users(pool, args.hangups, args.balance_seconds as i64 * 1000).await?;
    let load_users = seed_users(pool, args.sessions, long).await?;
    let max_jobs = args.rooms.max(args.hangups).max(args.sessions) + 5;
    let mut c = Contender::start(kind, config, db_url, max_jobs, None).await?;
    let server = Server::new(config);
    let mut f = Figures::default();
    let run = async {
        let phases = phases::Phases { config, args, c: &c, server: &server };
        phases.join(&join_users, &mut f).await?;
        phases.hangup(&hangup_users, &mut f).await?;
        phases.load(&load_users, &mut f).await
    }
    .await;
    if let Err(e) = &run {
        eprintln!("{} failed: {e:#}\nits last log lines:\n{}", kind.label(), c.tail());
    }
    c.stop().await;
    run.map(|()| f)
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
/// A table row: its label, how to read it from one side's figures, its unit.
type Row<T> = (String, fn(&T) -> Option<f64>, &'static str);

fn rows(args: &AgentsArgs) -> Vec<Row<Figures>> {
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

/// A side-by-side table under `title`: per row, ours, theirs and their ratio.
fn print_rows<T>(title: &str, width: usize, rows: Vec<Row<T>>, ours: Option<&T>, theirs: Option<&T>) {
    let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    println!();
    println!("{title:<width$} {:>10} {:>15} {:>8}", "mindbot", "livekit-agents", "ratio");
    for (label, read, unit) in rows {
        let (a, b) = (ours.and_then(read), theirs.and_then(read));
        let ratio = match (a, b) {
            (Some(a), Some(b)) if a > 0.0 => format!("{:.1}x", b / a),
            _ => "-".to_string(),
        };
        println!("{:<width$} {:>10} {:>15} {:>8}", format!("{label} ({unit})"), cell(a), cell(b), ratio);
    }
}

fn print_table(args: &AgentsArgs, all: &[(Kind, Figures)]) {
    let get = |kind: Kind| all.iter().find(|(k, _)| *k == kind).map(|(_, f)| f);
    let (ours, theirs) = (get(Kind::Mindbot), get(Kind::LivekitAgents));
    print_rows("metric", 46, rows(args), ours, theirs);
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
    println!("ratio = livekit-agents / mindbot; with fewer than 100 samples a p99 is their maximum");
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
