//! `bench meter`: M meters (as M workers would run them) each metering S
//! sessions through the real engine against one PostgreSQL, in a database of
//! its own that is dropped afterwards; tick write latency per meter and
//! overall, what the database did, and the audit.
//!
//! The meters run in this one process, each with its own worker id, its own
//! pool and its own schedule, exactly as a worker starts one: nothing is
//! shared between them but the database and the process's cores. One process
//! keeps the meters' CPU one figure and lets one audit follow one run; a
//! worker's other work (rooms, voice) is not the database's load.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use metering::meter::{Meter, MeteredSession, TickStats};
use metering::session::{EndReason, OpenSession};
use metering::{Millis, Rate, UserId};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::meter_db::DbWatch;
use crate::config::Config;

/// A fresh database next to the configured one, migrated.
pub(super) async fn scratch_database(config: &Config) -> Result<(PgConnectOptions, String)> {
    let base: PgConnectOptions = config.database.url.expose().parse().context("parsing database.url")?;
    let name = format!("mindbot_bench_{}", std::process::id());
    let mut admin = base.clone().connect().await.context("connecting to create the benchmark database")?;
    // Dynamic: a database name is an identifier, which cannot be a bound parameter.
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.context("creating benchmark database")?;
    Ok((base.database(&name), name))
}

pub(super) async fn drop_database(config: &Config, name: &str) -> Result<()> {
    let base: PgConnectOptions = config.database.url.expose().parse()?;
    let mut admin = base.connect().await?;
    // Dynamic: a database name is an identifier, which cannot be a bound parameter.
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await?;
    Ok(())
}

async fn seed_users(pool: &PgPool, n: usize) -> Result<Vec<UserId>> {
    let users = sqlx::query_scalar!(
        r#"INSERT INTO users (email, full_name, password_hash)
           SELECT 'bench-' || g || '@bench.invalid', 'Bench ' || g, 'x' FROM generate_series(1, $1) g
           RETURNING id AS "id: UserId""#,
        n as i64
    )
    .fetch_all(pool)
    .await?;
    // One 10-hour card each, active: enough for any run.
    metering::cards::grant_each(pool, &users, Millis::from_minutes(600)).await?;
    Ok(users)
}

/// How long the sessions are metered before the measured window starts.
const SETTLE: Duration = Duration::from_secs(3);

#[derive(Args)]
pub struct MeterArgs {
    /// Meters, each as one worker's (own worker id, own pool).
    #[arg(long, default_value_t = 1)]
    pub meters: usize,
    /// Concurrent sessions per meter.
    #[arg(long, default_value_t = 1000)]
    pub sessions: usize,
    /// How long the sessions are metered once all are open.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Keep the benchmark database instead of dropping it.
    #[arg(long)]
    pub keep: bool,
}

impl MeterArgs {
    /// Refuses counts the benchmark cannot mean, naming the flag.
    fn check(&self) -> Result<()> {
        anyhow::ensure!((1..=50).contains(&self.meters), "--meters must be between 1 and 50, got {}", self.meters);
        anyhow::ensure!(
            (1..=100_000).contains(&self.sessions),
            "--sessions must be between 1 and 100000, got {}",
            self.sessions
        );
        anyhow::ensure!(self.seconds > 0, "--seconds must be positive");
        Ok(())
    }
}

fn percentile(sorted: &[u32], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Duration::from_micros(u64::from(sorted[i]))
}

/// p50, p99 and max of batch write durations, in milliseconds.
fn latency(durations: &mut [u32]) -> String {
    durations.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(durations, 0.50)),
        ms(percentile(durations, 0.99)),
        durations.last().map_or(0.0, |d| f64::from(*d) / 1e3),
    )
}

/// The batch durations a meter recorded between two readings of its stats.
fn window(before: &TickStats, after: &TickStats) -> Vec<u32> {
    after.durations_us[before.durations_us.len().min(after.durations_us.len())..].to_vec()
}

/// Opens `per_meter` sessions on every meter, at most 16 opens at a time.
async fn open_all(meters: &[Arc<Meter>], users: &[UserId], per_meter: usize) -> Result<Vec<MeteredSession>> {
    let rates: Vec<Rate> = ["1.0", "1.25", "0.5", "2.75"].iter().map(|r| r.parse().expect("rate")).collect();
    let limit = Arc::new(Semaphore::new(16));
    let mut set = JoinSet::new();
    for (i, user) in users.iter().enumerate() {
        let meter = meters[i / per_meter].clone();
        let (limit, rate, user) = (limit.clone(), rates[i % rates.len()], *user);
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            meter
                .open(OpenSession {
                    user,
                    session_key: format!("bench-{i}"),
                    room: format!("bench-room-{i}"),
                    persona_slug: "professor-ada".into(),
                    rate,
                    agent_type: "bench".into(),
                    worker_id: String::new(), // the meter writes its own
                    ad_supported: false,
                })
                .await
        });
    }
    let mut sessions = Vec::with_capacity(users.len());
    while let Some(r) = set.join_next().await {
        sessions.push(r??);
    }
    Ok(sessions)
}

pub async fn meter(config: &Config, args: MeterArgs) -> Result<ExitCode> {
    args.check()?;
    let (m, per_meter, seconds) = (args.meters, args.sessions, args.seconds);
    let n = m * per_meter;
    let (opts, name) = scratch_database(config).await?;
    println!(
        "bench meter: {m} meter(s) x {per_meter} sessions = {n} for {seconds} s in database {name}; load average {}",
        super::load::machine::load_average()
    );
    let result = async {
        let pool = PgPoolOptions::new().max_connections(4).connect_with(opts.clone()).await?;
        metering::MIGRATOR.run(&pool).await?;
        let users = seed_users(&pool, n).await?;
        let mut meters = Vec::with_capacity(m);
        for k in 0..m {
            let own = PgPoolOptions::new()
                .max_connections(config.database.max_connections.max(4))
                .connect_with(opts.clone())
                .await?;
            meters.push(Arc::new(Meter::start(own, config.meter_config(&format!("bench-{k}")))));
        }

        let opened = Instant::now();
        let sessions = open_all(&meters, &users, per_meter).await?;
        println!("opened {n} sessions in {:.1} s", opened.elapsed().as_secs_f64());
        // The opens' own writes reach pg_stat_database up to a second late,
        // and the first batches carry every session's first charge row: the
        // window starts once both are behind.
        tokio::time::sleep(SETTLE).await;

        let stats0: Vec<TickStats> = meters.iter().map(|x| x.stats()).collect();
        let statements0: u64 = meters.iter().map(|x| x.store().statements()).sum();
        let watch = DbWatch::start(&pool).await?;
        let load_before = super::load::machine::load_average();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let work = watch.finish(&pool).await?;
        let stats1: Vec<TickStats> = meters.iter().map(|x| x.stats()).collect();
        let statements1: u64 = meters.iter().map(|x| x.store().statements()).sum();
        let load_after = super::load::machine::load_average();
        let rss = super::rss_bytes() as f64 / 1e6;

        let closing = Instant::now();
        let mut set = JoinSet::new();
        for s in sessions {
            set.spawn(s.close(EndReason::Shutdown));
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
        let close_s = closing.elapsed().as_secs_f64();
        for meter in meters {
            if let Ok(x) = Arc::try_unwrap(meter) {
                x.shutdown().await;
            }
        }

        let mut all = Vec::new();
        for (k, (before, after)) in stats0.iter().zip(&stats1).enumerate() {
            let mut d = window(before, after);
            println!(
                "meter bench-{k}: {} batches ({} sessions each), {} failed; tick write {}",
                after.batches - before.batches,
                after.last_batch_size,
                after.failures - before.failures,
                latency(&mut d)
            );
            all.extend(d);
        }
        println!("all meters: {} batches; tick write {}", all.len(), latency(&mut all));
        println!(
            "statements sent by the meters: {:.1}/s ({} in {:.1} s)",
            (statements1 - statements0) as f64 / work.seconds,
            statements1 - statements0,
            work.seconds
        );
        println!("{}", work.report(n));
        println!("load average (1, 5, 15 min): {load_before} before, {load_after} after the window");
        println!("closed {n} sessions in {close_s:.1} s; process RSS while metering {rss:.0} MB");
        let totals = sqlx::query!(
            r#"SELECT COALESCE(SUM(charged_ms), 0)::int8 AS "charged!",
                   COUNT(*) FILTER (WHERE charged_ms > 0) AS "sessions!"
               FROM voice_sessions"#
        )
        .fetch_one(&pool)
        .await?;
        let (charged, sessions_charged) = (totals.charged, totals.sessions);
        println!("charged {charged} ms across {sessions_charged} sessions");
        let report = metering::audit::audit(&pool).await?;
        println!("{report}");
        pool.close().await;
        anyhow::Ok(report.passed())
    }
    .await;
    if args.keep {
        println!("kept database {name}");
    } else {
        drop_database(config, &name).await.context("dropping the benchmark database")?;
    }
    Ok(if result? { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
mod tests {
    use super::MeterArgs;

    fn args(meters: usize, sessions: usize, seconds: u64) -> MeterArgs {
        MeterArgs { meters, sessions, seconds, keep: false }
    }

    #[test]
    fn counts_outside_the_bounds_are_refused_naming_the_flag() {
        assert!(args(5, 10_000, 60).check().is_ok());
        for (bad, flag) in [
            (args(0, 10, 1), "--meters"),
            (args(51, 10, 1), "--meters"),
            (args(1, 0, 1), "--sessions"),
            (args(1, 100_001, 1), "--sessions"),
            (args(1, 10, 0), "--seconds"),
        ] {
            let e = bad.check().unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
    }
}
