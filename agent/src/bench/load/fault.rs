//! One fault caused while the load runs (`bench load --fault NAME`), by
//! `scripts/cluster.sh fault NAME`, which logs each of its steps to
//! `faults.log` in the cluster's directory; then what it did to the sessions
//! in flight: how they ended, whom the agent told, how far each charge was
//! from the time the user had an agent, and the fault's own rules:
//!
//! - kill-worker: every session of the killed worker ends `orphaned`, and a
//!   user still in the room when it is closed is told so;
//! - rolling-deploy: a session ended by the drain (`shutdown`) ran the whole
//!   drain timeout after its worker's SIGTERM, and its user meant to stay
//!   longer (no session that could finish within the drain is cut short);
//!   no visit fails (a job refused by a draining worker goes to another).
//!
//! For every fault, a charge is never above the seconds the user had an
//! agent (checked with the other sessions' by `compare`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use super::visit::{Outcome, Plan};
use super::{percentiles, Row};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// SIGKILL the worker with the most sessions; it stays down.
    KillWorker,
    /// Stop LiveKit node 1; it stays down.
    StopNode,
    /// Stop Redis and start it again, empty.
    RestartRedis,
    /// `pg_ctl restart -m fast` on the project-local PostgreSQL.
    RestartPostgres,
    /// Cut the workers' and the API's PostgreSQL connections for 20 s (the proxy stops).
    CutPostgres,
    /// SIGTERM each worker in turn, wait for its drain and exit, start it again.
    RollingDeploy,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillWorker => "kill-worker",
            Fault::StopNode => "stop-node",
            Fault::RestartRedis => "restart-redis",
            Fault::RestartPostgres => "restart-postgres",
            Fault::CutPostgres => "cut-postgres",
            Fault::RollingDeploy => "rolling-deploy",
        }
    }

    /// Runs `script fault NAME` against the cluster in `dir` and reads back its steps.
    pub async fn cause(self, script: &Path, dir: &Path, into_run: Duration) -> Result<Caused> {
        let began = unix_ms(SystemTime::now());
        println!("fault {}: starting ({} fault {})", self.name(), script.display(), self.name());
        let out = tokio::process::Command::new("bash")
            .arg(script)
            .arg("fault")
            .arg(self.name())
            .env("MINDBOT_CLUSTER_DIR", dir)
            // A worker it restarts logs as the cluster's others do, not as this generator.
            .env_remove("RUST_LOG")
            .output()
            .await
            .with_context(|| format!("running {}", script.display()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            bail!("{} fault {} failed ({}): {}", script.display(), self.name(), out.status, err.trim());
        }
        let log = dir.join("faults.log");
        let text = std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
        let events: Vec<Event> = text.lines().filter_map(Event::parse).filter(|e| e.at_ms >= began - 1000).collect();
        let end = unix_ms(SystemTime::now());
        let start = events.iter().find(|e| e.step == "start").map_or(began, |e| e.at_ms);
        let drain_ms = super::cluster_env(dir)
            .ok()
            .and_then(|env| env.get("MINDBOT_WORKER_DRAIN_TIMEOUT_SECONDS")?.parse::<i64>().ok())
            .unwrap_or(20)
            * 1000;
        println!("fault {}: done in {:.1} s", self.name(), (end - start) as f64 / 1000.0);
        Ok(Caused { fault: self, into_run, start_ms: start, end_ms: end, events, drain_ms })
    }
}

/// One line of `faults.log`: `<unix ms> <step> <fault> <part> [worker id]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at_ms: i64,
    pub step: String,
    pub part: String,
    pub worker_id: Option<String>,
}

impl Event {
    fn parse(line: &str) -> Option<Event> {
        let mut words = line.split_whitespace();
        let at_ms = words.next()?.parse().ok()?;
        let step = words.next()?.to_string();
        let _fault = words.next()?;
        let part = words.next().unwrap_or("").to_string();
        let worker_id = words.next().map(str::to_string);
        Some(Event { at_ms, step, part, worker_id })
    }
}

/// A fault as it happened.
pub struct Caused {
    pub fault: Fault,
    /// When it was started, counted from the run's start.
    pub into_run: Duration,
    pub start_ms: i64,
    pub end_ms: i64,
    pub events: Vec<Event>,
    pub drain_ms: i64,
}

pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A visit's `started` and end, in Unix milliseconds.
fn span(o: &Outcome) -> Option<(i64, i64)> {
    let start = unix_ms(o.started_at?);
    Some((start, start + o.seen?.as_millis() as i64))
}

impl Caused {
    /// Whether the session was open while the fault went on: from the user's
    /// `started` to the later of their leaving and the session's close (a
    /// session closes a moment after its user leaves; an orphan's close is
    /// dated to its last heartbeat). A session closed as an orphan was the
    /// fault's too (its user may have left a moment before the kill, which
    /// the dead worker never recorded).
    pub fn touched(&self, o: &Outcome, row: Option<&Row>) -> bool {
        if row.is_some_and(|r| r.end_reason.as_deref() == Some("orphaned")) {
            return true;
        }
        span(o).is_some_and(|(s, e)| {
            let e = e.max(row.and_then(|r| r.ended_ms).unwrap_or(e));
            s <= self.end_ms && e >= self.start_ms
        })
    }

    /// The worker ids a step names (the killed worker, each SIGTERMed one).
    fn workers(&self, step: &str) -> Vec<(i64, String)> {
        self.events.iter().filter(|e| e.step == step).filter_map(|e| Some((e.at_ms, e.worker_id.clone()?))).collect()
    }
}

/// What the fault did, and the rules it broke (if any).
pub struct Report {
    text: String,
    pub violations: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What the run's workers are set to (the generator reads the same settings).
pub struct Settings {
    /// A killed worker's sessions are closed by then after the kill (heartbeat timeout + one reap interval).
    pub reaped_within_ms: i64,
}

pub fn report(caused: &Caused, outcomes: &[Outcome], rows: &HashMap<String, Row>, settings: &Settings) -> Report {
    let mut violations = Vec::new();
    let name = caused.fault.name();
    let touched: Vec<&Outcome> = outcomes.iter().filter(|o| caused.touched(o, rows.get(&o.room))).collect();
    let killed = match caused.fault {
        Fault::KillWorker => caused.workers("start").into_iter().next(),
        _ => None,
    };
    if caused.fault == Fault::KillWorker && killed.is_none() {
        violations.push(format!("{name}: faults.log names no killed worker"));
    }
    let on_killed = |row: &Row| killed.as_ref().is_some_and(|(_, id)| row.worker_id.as_deref() == Some(id.as_str()));

    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut told: BTreeMap<String, usize> = BTreeMap::new();
    let (mut over, mut short, mut on_it, mut cut) = (0i64, 0i64, 0, 0);
    let mut shortest = String::new();
    for o in &touched {
        let (Some(row), Some((start, end)), Some(served)) = (rows.get(&o.room), span(o), o.served()) else { continue };
        *reasons.entry(row.end_reason.clone().unwrap_or_else(|| row.status.clone())).or_default() += 1;
        if let Some(t) = &o.told {
            *told.entry(t.clone()).or_default() += 1;
        }
        // The time the user had an agent; a killed worker's agent served until the kill.
        let (mut had, mut away) = (served.as_millis() as i64, o.away.as_millis() as i64);
        if let (true, Some((kill, _))) = (on_killed(row), &killed) {
            had = had.min(kill - start);
            away = o.away_before(Duration::from_millis(had.max(0) as u64)).as_millis() as i64;
            on_it += 1;
            check_orphan(o, row, end, kill + settings.reaped_within_ms, &mut violations);
        }
        if caused.fault == Fault::RollingDeploy && row.end_reason.as_deref() == Some("shutdown") {
            cut += 1;
            check_drained(caused, o, row, end, &mut violations);
        }
        let charged = row.charged_ms * 1000 / row.rate_ms_per_second.max(1);
        let error = charged - had + away;
        over = over.max(error);
        if error < short {
            short = error;
            shortest = format!(" ({}, {:?}, ended {:?})", o.room, o.plan, row.end_reason);
        }
        // (`compare` holds every other session to the seconds its user saw.)
        if on_killed(row) && error > 999 {
            violations.push(format!("{}: charged {error} ms past its worker's kill", o.room));
        }
    }
    // Visits that began while the fault went on (and up to a minute after).
    let began_during = |o: &&Outcome| {
        o.started_at.is_some_and(|t| {
            let t = unix_ms(t) - o.to_started.map_or(0, |d| d.as_millis() as i64);
            t >= caused.start_ms && t <= caused.end_ms + 60_000
        })
    };
    let dispatch: Vec<Duration> = outcomes.iter().filter(began_during).filter_map(|o| o.to_started).collect();
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    let no_agent = touched.iter().filter(|o| o.back_to_no_agent).count();
    let retries: u32 = outcomes.iter().map(|o| o.retries).sum();
    let reconnects: u32 = touched.iter().map(|o| o.reconnects).sum();
    let join_retries: u32 = outcomes.iter().map(|o| o.join_retries).sum();

    let mut text = format!(
        "fault {name}: {:.0} s into the run, for {:.1} s\n  sessions in flight during it: {}\n  how they ended:",
        caused.into_run.as_secs_f64(),
        (caused.end_ms - caused.start_ms) as f64 / 1000.0,
        touched.len()
    );
    for (r, n) in &reasons {
        text.push_str(&format!(" {r}={n}"));
    }
    text.push_str("\n  the agent told the user (`ended`):");
    for (r, n) in &told {
        text.push_str(&format!(" {r}={n}"));
    }
    if told.is_empty() {
        text.push_str(" none");
    }
    if let Some((_, id)) = &killed {
        text.push_str(&format!("\n  sessions on the killed worker {id}: {on_it} (their agent served until the kill)"));
    }
    if caused.fault == Fault::RollingDeploy {
        text.push_str(&format!("\n  sessions ended by a drain (shutdown): {cut}"));
    }
    text.push_str(&format!("\n  users back from stepping away to a room without its agent: {no_agent}"));
    text.push_str(&format!(
        "\n  charge - time with an agent, over them: largest above {over} ms, largest below {short} ms{shortest}\n  \
         visits begun during it (and a minute after): dispatch -> started {}\n  \
         failed visits in the run: {failed}; retried: POST /v1/sessions {retries} times, joins \
         {join_retries} times; users whose connection broke and who joined again: {reconnects} times\n",
        percentiles(dispatch)
    ));
    Report { text, violations }
}

/// A killed worker's session ends `orphaned`, and a user still in the room
/// once the reaper has surely run is told so.
fn check_orphan(o: &Outcome, row: &Row, user_left: i64, reaped_by: i64, violations: &mut Vec<String>) {
    if row.end_reason.as_deref() != Some("orphaned") {
        violations.push(format!("{}: on the killed worker, ended {:?}, not orphaned", o.room, row.end_reason));
    } else if o.told.as_deref() != Some("orphaned") && user_left > reaped_by + 2000 {
        violations.push(format!(
            "{}: its user was still there {} ms after the orphans were closed, and was not told",
            o.room,
            user_left - reaped_by
        ));
    }
}

/// A session a drain ended (`shutdown`) had its whole drain after its
/// worker's SIGTERM; and if its user was still in the room at that end, they
/// had not meant to leave before it (a session that could finish within the
/// drain is not cut short). A user who had left, and whose grace the drain
/// ended, lost nothing: charging stopped when they left.
fn check_drained(caused: &Caused, o: &Outcome, row: &Row, user_left: i64, violations: &mut Vec<String>) {
    let worker = row.worker_id.as_deref().unwrap_or("");
    let Some((sigterm, _)) = caused.workers("sigterm").into_iter().find(|(_, id)| id == worker) else {
        violations.push(format!("{}: ended shutdown on {worker}, which was never sent SIGTERM", o.room));
        return;
    };
    let ended = row.ended_ms.unwrap_or(0);
    if ended + 1000 < sigterm + caused.drain_ms {
        violations.push(format!(
            "{}: ended shutdown {} ms after its worker's SIGTERM, within the {} ms drain",
            o.room,
            ended - sigterm,
            caused.drain_ms
        ));
    }
    let planned_end = match (o.plan, o.started_at) {
        (Plan::Stay(stay) | Plan::StepAway { stay, .. }, Some(t)) => {
            unix_ms(t) + stay.as_millis() as i64 + o.away.as_millis() as i64
        }
        (Plan::RunOut, Some(t)) => unix_ms(t) + i64::from(o.card_minutes) * 60_000,
        (_, None) => i64::MAX,
    };
    if user_left + 1000 >= ended && planned_end + 1000 < ended {
        violations.push(format!(
            "{}: cut short by the drain while its user was there, {} ms after they meant to leave",
            o.room,
            ended - planned_end
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_log_lines_read_with_and_without_a_worker_id() {
        let e = Event::parse("1764640000123 sigterm rolling-deploy worker-2 mindbot-0123456789ab").unwrap();
        assert_eq!(e.at_ms, 1_764_640_000_123);
        assert_eq!((e.step.as_str(), e.part.as_str()), ("sigterm", "worker-2"));
        assert_eq!(e.worker_id.as_deref(), Some("mindbot-0123456789ab"));
        let e = Event::parse("1764640000999 end restart-redis redis").unwrap();
        assert_eq!((e.step.as_str(), e.worker_id), ("end", None));
        assert!(Event::parse("not a line").is_none());
    }

    #[test]
    fn time_away_before_a_moment_counts_only_what_came_before_it() {
        let mut o = Outcome::new(Plan::RunOut, 1);
        let s = Duration::from_secs;
        o.away_spans = vec![(s(2), s(5)), (s(10), s(12))];
        assert_eq!(o.away_before(s(1)), Duration::ZERO);
        assert_eq!(o.away_before(s(4)), s(2));
        assert_eq!(o.away_before(s(11)), s(4));
        assert_eq!(o.away_before(s(60)), s(5));
    }

    #[test]
    fn a_session_is_the_faults_if_open_during_it_or_closed_as_an_orphan() {
        let caused = Caused {
            fault: Fault::KillWorker,
            into_run: Duration::from_secs(60),
            start_ms: 100_000,
            end_ms: 100_100,
            events: Vec::new(),
            drain_ms: 20_000,
        };
        let visit = |start_ms: u64, seen_ms: u64| {
            let mut o = Outcome::new(Plan::Stay(Duration::from_secs(10)), 2);
            o.started_at = Some(UNIX_EPOCH + Duration::from_millis(start_ms));
            o.seen = Some(Duration::from_millis(seen_ms));
            o
        };
        let row = |end_reason: &str, ended_ms: i64| Row {
            room_name: "r".into(),
            status: "completed".into(),
            end_reason: Some(end_reason.into()),
            charged_ms: 0,
            rate_ms_per_second: 1000,
            worker_id: None,
            ended_ms: Some(ended_ms),
        };
        // The user was there when it began; or had left, but the session closed after it began.
        assert!(caused.touched(&visit(90_000, 20_000), None));
        assert!(caused.touched(&visit(90_000, 9_000), Some(&row("user_left", 100_050))));
        // Over before it, or begun after it.
        assert!(!caused.touched(&visit(90_000, 9_000), Some(&row("user_left", 99_500))));
        assert!(!caused.touched(&visit(100_200, 5_000), None));
        // An orphan's close is dated to its last heartbeat, before the kill: still the fault's.
        assert!(caused.touched(&visit(90_000, 9_000), Some(&row("orphaned", 99_500))));
    }
}
