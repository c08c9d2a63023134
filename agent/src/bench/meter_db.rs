//! What the one PostgreSQL did while `bench meter` metered: its CPU (every
//! `postgres` process, as `bench load` counts it), transactions committed and
//! rows written in the benchmark's database, and WAL written by the whole
//! server. Figures only; nothing here decides a pass or a fail.

use std::time::Instant;

use anyhow::Result;
use sqlx::PgPool;

use super::load::machine;

/// The counters at one instant.
#[derive(Debug, Clone, Copy)]
struct Counters {
    at: Instant,
    commits: i64,
    rows_inserted: i64,
    rows_updated: i64,
    wal_bytes: i64,
    postgres_cpu: f64,
    own_cpu: f64,
}

async fn read(pool: &PgPool) -> Result<Counters> {
    // Backends flush their counts to pg_stat_database about once a second:
    // noise over a window of a minute.
    let r = sqlx::query!(
        r#"SELECT xact_commit AS "commits!", tup_inserted AS "inserted!", tup_updated AS "updated!",
                  pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::int8 AS "wal!"
           FROM pg_stat_database WHERE datname = current_database()"#
    )
    .fetch_one(pool)
    .await?;
    let postgres_cpu = machine::named("postgres").into_iter().filter_map(machine::process).map(|(cpu, _)| cpu).sum();
    Ok(Counters {
        at: Instant::now(),
        commits: r.commits,
        rows_inserted: r.inserted,
        rows_updated: r.updated,
        wal_bytes: r.wal,
        postgres_cpu,
        own_cpu: super::cpu_seconds(),
    })
}

/// A window over which the database's work is measured.
pub struct DbWatch {
    start: Counters,
}

/// What the database did over a window, per second of it.
#[derive(Debug, Clone, Copy)]
pub struct DbWork {
    pub seconds: f64,
    pub commits_per_s: f64,
    pub rows_inserted_per_s: f64,
    pub rows_updated_per_s: f64,
    /// WAL bytes per second, written by the whole server (other databases too).
    pub wal_bytes_per_s: f64,
    /// Share of one core, over every `postgres` process.
    pub postgres_cpu: f64,
    /// Share of one core used by this process (the meters).
    pub meters_cpu: f64,
}

impl DbWatch {
    pub async fn start(pool: &PgPool) -> Result<DbWatch> {
        Ok(DbWatch { start: read(pool).await? })
    }

    pub async fn finish(self, pool: &PgPool) -> Result<DbWork> {
        let end = read(pool).await?;
        let s = &self.start;
        let seconds = end.at.duration_since(s.at).as_secs_f64().max(0.001);
        let per_s = |a: i64, b: i64| (b - a) as f64 / seconds;
        Ok(DbWork {
            seconds,
            commits_per_s: per_s(s.commits, end.commits),
            rows_inserted_per_s: per_s(s.rows_inserted, end.rows_inserted),
            rows_updated_per_s: per_s(s.rows_updated, end.rows_updated),
            wal_bytes_per_s: per_s(s.wal_bytes, end.wal_bytes),
            // Backends that exited during the window take their CPU with them; ours live throughout.
            postgres_cpu: ((end.postgres_cpu - s.postgres_cpu) / seconds * 100.0).max(0.0),
            meters_cpu: (end.own_cpu - s.own_cpu) / seconds * 100.0,
        })
    }
}

impl DbWork {
    /// The report, with the cost per metered session-second.
    pub fn report(&self, sessions: usize) -> String {
        let per_session = |v: f64| v / sessions.max(1) as f64;
        format!(
            "postgresql: {:.1}% of a core (all postgres processes); {:.1} commits/s; rows {:.0} inserted/s, \
             {:.0} updated/s; WAL {:.2} MB/s (whole server)\n\
             per session-second: {:.2} rows written, {:.0} WAL bytes\n\
             meters (this process): {:.1}% of a core",
            self.postgres_cpu,
            self.commits_per_s,
            self.rows_inserted_per_s,
            self.rows_updated_per_s,
            self.wal_bytes_per_s / 1e6,
            per_session(self.rows_inserted_per_s + self.rows_updated_per_s),
            per_session(self.wal_bytes_per_s),
            self.meters_cpu,
        )
    }
}
