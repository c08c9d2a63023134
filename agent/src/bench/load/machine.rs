//! What the cluster costs the machine during a load run: CPU and resident
//! memory of each of its processes (read from `/proc`, by the pid files
//! `scripts/cluster.sh` writes), PostgreSQL's CPU (every `postgres` process:
//! the server is shared by whatever uses it) and its transactions per second
//! (`pg_stat_database`). Figures only; nothing here decides a pass or a fail.

use std::path::Path;
use std::time::Instant;

use sqlx::PgPool;

/// CPU seconds (user + system) and resident bytes of one process now.
pub(in crate::bench) fn process(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields count from the end of the parenthesised command name: utime, stime are 11 and 12 after it.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let cpu = (ticks(11) + ticks(12)) as f64 / 100.0; // USER_HZ is 100 on Linux
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    Some((cpu, rss))
}

/// Pids of every process whose command name is `name`.
pub(in crate::bench) fn named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name))
        .collect()
}

/// One part of the cluster being watched: a name and how to find its pids.
struct Part {
    name: String,
    pids: Vec<u32>,
    cpu_start: f64,
    cpu_now: f64,
    rss_peak: u64,
}

/// The cluster's processes, sampled at the start, now and then, and at the end.
pub struct Watch {
    parts: Vec<Part>,
    started: Instant,
    commits_start: i64,
}

/// The pid a `server.pid` file under `dir` names.
fn pid_in(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("server.pid")).ok()?.trim().parse().ok()
}

impl Watch {
    /// Finds the cluster's processes under `cluster_dir` and PostgreSQL's.
    pub async fn start(cluster_dir: &Path, pool: &PgPool) -> Watch {
        let mut dirs: Vec<_> = std::fs::read_dir(cluster_dir)
            .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.join("server.pid").exists()).collect())
            .unwrap_or_default();
        dirs.sort();
        let mut parts: Vec<Part> = dirs
            .iter()
            .filter_map(|d| {
                let pid = pid_in(d)?;
                let name = d.file_name()?.to_string_lossy().into_owned();
                Some(Part { name, pids: vec![pid], cpu_start: 0.0, cpu_now: 0.0, rss_peak: 0 })
            })
            .collect();
        // This process: the users (their rooms, tones and clocks).
        parts.push(Part {
            name: "bench users".into(),
            pids: vec![std::process::id()],
            cpu_start: 0.0,
            cpu_now: 0.0,
            rss_peak: 0,
        });
        parts.push(Part {
            name: "postgresql".into(),
            pids: named("postgres"),
            cpu_start: 0.0,
            cpu_now: 0.0,
            rss_peak: 0,
        });
        let mut watch = Watch { parts, started: Instant::now(), commits_start: commits(pool).await };
        watch.sample();
        for p in &mut watch.parts {
            p.cpu_start = p.cpu_now;
        }
        watch
    }

    /// Reads every part's CPU time and memory now (the peak memory is kept).
    pub fn sample(&mut self) {
        for part in &mut self.parts {
            if part.name == "postgresql" {
                // Backends come and go; CPU is counted over those alive at each sample.
                part.pids = named("postgres");
            }
            let (mut cpu, mut rss) = (0.0, 0);
            for (c, r) in part.pids.iter().filter_map(|&pid| process(pid)) {
                cpu += c;
                rss += r;
            }
            if part.name == "postgresql" {
                part.cpu_now = part.cpu_now.max(cpu);
            } else {
                part.cpu_now = cpu;
            }
            part.rss_peak = part.rss_peak.max(rss);
        }
    }

    /// The report: each part's CPU share over the run and peak RSS, and PostgreSQL's transactions per second.
    pub async fn report(&mut self, pool: &PgPool) -> String {
        self.sample();
        let wall = self.started.elapsed().as_secs_f64().max(0.001);
        let mut out = String::new();
        for p in &self.parts {
            let cpu = (p.cpu_now - p.cpu_start).max(0.0) / wall * 100.0;
            // PostgreSQL's processes share its buffers: their RSS sum counts them once per process.
            let note = if p.name == "postgresql" { " (sum over processes)" } else { "" };
            out.push_str(&format!(
                "  {:<12} CPU {:>6.1}% of a core   RSS peak {:>7.1} MiB{note}\n",
                p.name,
                cpu,
                p.rss_peak as f64 / 1_048_576.0
            ));
        }
        let commits = (commits(pool).await - self.commits_start) as f64 / wall;
        out.push_str(&format!("  postgresql transactions (xact_commit) {commits:.0}/s in this database\n"));
        if let Some(calls) = statements(pool).await {
            out.push_str(&format!("  postgresql statements (pg_stat_statements, all time) {calls}\n"));
        }
        out.push_str(&format!("  load average (1, 5, 15 min) {}\n", load_average()));
        out
    }
}

/// Transactions committed in this database so far.
async fn commits(pool: &PgPool) -> i64 {
    sqlx::query_scalar!(r#"SELECT xact_commit AS "commits!" FROM pg_stat_database WHERE datname = current_database()"#)
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

/// Statements run, when the pg_stat_statements extension is installed.
async fn statements(pool: &PgPool) -> Option<i64> {
    // Checked at run time: the extension may be absent, at build time too.
    sqlx::query_scalar("SELECT sum(calls)::bigint FROM pg_stat_statements").fetch_one(pool).await.ok().flatten()
}

/// The machine's load averages, as /proc/loadavg has them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
