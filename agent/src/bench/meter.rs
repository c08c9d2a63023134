//! `bench meter`: N metered sessions through the real engine against
//! PostgreSQL, in a database of its own that is dropped afterwards.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use metering::meter::{Meter, MeteredSession};
use metering::session::{EndReason, OpenSession};
use metering::{Millis, Rate, UserId};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

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

fn percentile(sorted: &[u32], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Duration::from_micros(u64::from(sorted[i]))
}

pub async fn meter(config: &Config, n: usize, seconds: u64, keep: bool) -> Result<ExitCode> {
    anyhow::ensure!(n > 0 && seconds > 0, "--sessions and --seconds must be positive");
    let (opts, name) = scratch_database(config).await?;
    println!("bench meter: {n} sessions for {seconds} s in database {name}");
    let result = async {
        let pool =
            PgPoolOptions::new().max_connections(config.database.max_connections.max(4)).connect_with(opts).await?;
        metering::MIGRATOR.run(&pool).await?;
        let users = seed_users(&pool, n).await?;
        let meter = Arc::new(Meter::start(pool.clone(), config.meter_config("bench")));
        let rates: Vec<Rate> = ["1.0", "1.25", "0.5", "2.75"].iter().map(|r| r.parse().expect("rate")).collect();

        let opened = Instant::now();
        let limit = Arc::new(Semaphore::new(16));
        let mut set = JoinSet::new();
        for (i, user) in users.iter().enumerate() {
            let (meter, limit, rate, user) = (meter.clone(), limit.clone(), rates[i % rates.len()], *user);
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
                        worker_id: "bench".into(),
                        ad_supported: false,
                    })
                    .await
            });
        }
        let mut sessions: Vec<MeteredSession> = Vec::with_capacity(n);
        while let Some(r) = set.join_next().await {
            sessions.push(r??);
        }
        println!("opened {n} sessions in {:.1} s", opened.elapsed().as_secs_f64());

        let stats0 = meter.stats();
        let statements0 = meter.store().statements();
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let window = started.elapsed().as_secs_f64();
        let stats1 = meter.stats();
        let statements1 = meter.store().statements();
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
        if let Ok(m) = Arc::try_unwrap(meter) {
            m.shutdown().await;
        }

        let mut durations: Vec<u32> =
            stats1.durations_us[stats0.durations_us.len().min(stats1.durations_us.len())..].to_vec();
        durations.sort_unstable();
        let batches = stats1.batches - stats0.batches;
        println!(
            "tick batches: {batches} ({} sessions each), failed writes: {}",
            stats1.last_batch_size,
            stats1.failures - stats0.failures
        );
        println!(
            "tick duration: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            percentile(&durations, 0.50).as_secs_f64() * 1e3,
            percentile(&durations, 0.99).as_secs_f64() * 1e3,
            durations.last().map_or(0.0, |d| f64::from(*d) / 1e3),
        );
        println!(
            "statements per second while metering: {:.1} ({} statements in {:.1} s)",
            (statements1 - statements0) as f64 / window,
            statements1 - statements0,
            window
        );
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
    if keep {
        println!("kept database {name}");
    } else {
        drop_database(config, &name).await.context("dropping the benchmark database")?;
    }
    Ok(if result? { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
