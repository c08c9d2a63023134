//! `bench load`: the cluster of `scripts/cluster.sh` under churn. Keeps N
//! user visits in flight for T seconds (bounded, loopback only), each a
//! new user with a card of random size who gets a token from the public API,
//! joins through HAProxy, plays a tone and leaves at a random time, steps
//! away and back within the grace, or stays until the balance runs out.
//! Prints the latencies, the sessions per worker and what each part of the
//! cluster cost; then compares, per session, the time the user saw with the
//! time charged, and runs the audit. A broken comparison, a failed visit or
//! a failed audit is printed and makes the exit status non-zero.
//!
//! With `--fault`, one fault is caused during the run (`scripts/cluster.sh
//! fault NAME`) and a report of the sessions it touched follows (`fault.rs`).

mod fault;
pub(super) mod machine;
mod visit;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use visit::{roll, Outcome, Plan, Target};

/// Most visits in flight, and longest run: the generator is for one machine.
const MAX_SESSIONS: usize = 1000;
const MAX_SECONDS: u64 = 3600;

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Visits kept in flight.
    #[arg(long, default_value_t = 300)]
    sessions: usize,
    /// How long new visits start; then every user leaves and the books are checked.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// The cluster's state directory (scripts/cluster.sh start writes cluster.env and jwt.key there).
    #[arg(long, env = "MINDBOT_CLUSTER_DIR", default_value = ".cache/cluster")]
    cluster: PathBuf,
    /// The persona every user talks to.
    #[arg(long, default_value = "professor-ada")]
    persona: String,
    /// A fault to cause while the load runs (`scripts/cluster.sh fault NAME`).
    #[arg(long, value_enum)]
    fault: Option<fault::Fault>,
    /// Seconds into the run the fault starts (default: a third of --seconds).
    #[arg(long)]
    fault_at: Option<u64>,
    /// The script that causes the fault.
    #[arg(long, default_value = "scripts/cluster.sh")]
    cluster_script: PathBuf,
}

/// One closed (or not) session, as the books hold it.
#[derive(Debug)]
struct Row {
    room_name: String,
    status: String,
    end_reason: Option<String>,
    charged_ms: i64,
    rate_ms_per_second: i64,
    worker_id: Option<String>,
    /// When the session closed, in Unix milliseconds.
    ended_ms: Option<i64>,
}

/// `KEY=value` lines of the cluster's `cluster.env`.
fn cluster_env(dir: &std::path::Path) -> Result<HashMap<String, String>> {
    let path = dir.join("cluster.env");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (start the cluster: scripts/cluster.sh start)", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

/// The arguments, checked: bounded and aimed at this machine only.
fn check(args: &LoadArgs, env: &HashMap<String, String>) -> Result<()> {
    if args.sessions == 0 || args.sessions > MAX_SESSIONS {
        bail!("--sessions must be 1..={MAX_SESSIONS} (got {})", args.sessions);
    }
    if args.seconds == 0 || args.seconds > MAX_SECONDS {
        bail!("--seconds must be 1..={MAX_SECONDS} (got {})", args.seconds);
    }
    if let Some(at) = args.fault_at {
        if args.fault.is_none() {
            bail!("--fault-at {at} needs a --fault");
        }
        if at >= args.seconds {
            bail!("--fault-at must be below --seconds ({}), got {at}", args.seconds);
        }
    }
    for key in ["LIVEKIT_URL", "MINDBOT_CLUSTER_API_URL", "DATABASE_URL"] {
        let url = env.get(key).with_context(|| format!("cluster.env has no {key}"))?;
        let host_ok = match key {
            "DATABASE_URL" => url.contains("@127.0.0.1") || url.contains("@localhost") || url.contains("@[::1]"),
            _ => mindbot_transport::url::host_is_loopback(url),
        };
        if !host_ok {
            bail!("bench load drives only a loopback cluster: {key} ({url}) is not a loopback address");
        }
    }
    Ok(())
}

/// A visit to make: what the user does and the card they bring.
fn plan(seconds: u64, grace: u64) -> (Plan, i32) {
    let longest = seconds.clamp(6, 120);
    let stay = Duration::from_secs(5 + roll(longest - 4));
    match roll(100) {
        // A one-minute card (the least a session may start with) and no intent to leave.
        0..=14 => (Plan::RunOut, 1),
        15..=34 if grace >= 4 && stay >= Duration::from_secs(6) => {
            let after = Duration::from_secs(1 + roll(stay.as_secs() / 2));
            let away = Duration::from_secs(1 + roll(grace - 3));
            (Plan::StepAway { after, away, stay }, 2 + roll(9) as i32)
        }
        _ => (Plan::Stay(stay), 2 + roll(9) as i32),
    }
}

/// The period of the generator's lateness probe.
const LATENESS_TICK: Duration = Duration::from_millis(100);

pub async fn load(config: &Config, args: LoadArgs) -> Result<ExitCode> {
    let env = cluster_env(&args.cluster)?;
    check(&args, &env)?;
    let jwt_key = std::fs::read_to_string(args.cluster.join("jwt.key")).context("reading the cluster's jwt.key")?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&env["DATABASE_URL"])
        .await
        .context("connecting to the cluster's PostgreSQL")?;
    let grace = config.worker.user_grace_seconds;
    let target = Arc::new(Target {
        api_url: env["MINDBOT_CLUSTER_API_URL"].clone(),
        jwt_key: jwt_key.trim().to_string(),
        jwt_issuer: env.get("MINDBOT_API_JWT_ISSUER").cloned().unwrap_or_default(),
        jwt_audience: env.get("MINDBOT_API_JWT_AUDIENCE").cloned().unwrap_or_default(),
        persona: args.persona.clone(),
        http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?,
    });
    println!(
        "bench load: {} visits in flight for {} s through {} (grace {grace} s); load average {}",
        args.sessions,
        args.seconds,
        env["LIVEKIT_URL"],
        machine::load_average()
    );
    let mut watch = machine::Watch::start(&args.cluster, &pool).await;
    let stop = CancellationToken::new();
    let until = Instant::now() + Duration::from_secs(args.seconds);
    // Users arrive over a ramp rather than all in one instant.
    let ramp = Duration::from_millis(100 * args.sessions as u64).min(Duration::from_secs(args.seconds / 4 + 1));
    let mut slots = Vec::new();
    for i in 0..args.sessions {
        let (pool, target, stop) = (pool.clone(), target.clone(), stop.clone());
        let delay = ramp.mul_f64(i as f64 / args.sessions as f64);
        let seconds = args.seconds;
        slots.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut outcomes = Vec::new();
            while Instant::now() < until && !stop.is_cancelled() {
                let (plan, minutes) = plan(seconds, grace);
                outcomes.push(visit::visit(&pool, &target, plan, minutes, &stop).await);
            }
            outcomes
        }));
    }
    // How late the generator's own tasks run (a timer's overshoot): its
    // users' clocks read an arrival that much late when it is starved.
    let lateness = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut lags = Vec::new();
            while !stop.is_cancelled() {
                let t = Instant::now();
                tokio::time::sleep(LATENESS_TICK).await;
                lags.push(t.elapsed().saturating_sub(LATENESS_TICK));
            }
            lags
        })
    };
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                watch.sample();
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            watch
        })
    };
    let fault = args.fault.map(|f| {
        let at = Duration::from_secs(args.fault_at.unwrap_or(args.seconds / 3));
        let (script, dir) = (args.cluster_script.clone(), args.cluster.clone());
        tokio::spawn(async move {
            tokio::time::sleep(at).await;
            f.cause(&script, &dir, at).await
        })
    });
    tokio::time::sleep_until(until.into()).await;
    stop.cancel();
    let mut outcomes: Vec<Outcome> = Vec::new();
    for slot in slots {
        outcomes.extend(slot.await.context("a user task panicked")?);
    }
    let caused = match fault {
        Some(task) => Some(task.await.context("the fault task panicked")?),
        None => None,
    };
    let lateness = lateness.await.context("the lateness probe panicked")?;
    let mut watch = sampler.await.context("the sampler panicked")?;
    let machine = watch.report(&pool).await;
    let rooms: Vec<String> = outcomes.iter().filter(|o| !o.room.is_empty()).map(|o| o.room.clone()).collect();
    let books = closed_rows(&pool, &rooms, Duration::from_secs(grace + 60)).await?;
    let rows = &books.rooms;

    let mut failed = false;
    println!("\n{}", summary(&outcomes, rows));
    println!("the generator's own lateness (a 100 ms timer's overshoot): {}", percentiles(lateness));
    let mic_quiet: Vec<Duration> = outcomes.iter().filter_map(|o| o.mic_quiet).collect();
    println!("at a user's leave, since their microphone last sent: {}", percentiles(mic_quiet));
    println!("machine (over the run):\n{machine}");
    let errors: Vec<&Outcome> = outcomes.iter().filter(|o| o.error.is_some()).collect();
    if !errors.is_empty() {
        failed = true;
        println!("FAILED VISITS: {} of {}", errors.len(), outcomes.len());
        for o in errors.iter().take(10) {
            println!("  {} {:?}: {}", o.room, o.plan, o.error.as_deref().unwrap_or(""));
        }
    }
    if books.repeated > 0 {
        println!("visits that had more than one session (rejoined a room that had ended): {}", books.repeated);
    }
    if !books.overlapping.is_empty() {
        failed = true;
        println!("ROOMS WITH TWO SESSIONS OPEN AT ONCE: {:?}", books.overlapping);
    }
    let touched_by = caused.as_ref().and_then(|c| c.as_ref().ok());
    println!(
        "charged - seen per session (time away added back; the rule allows -1000 ms up to the second begun): {}",
        spread(charge_errors(&outcomes, rows, touched_by))
    );
    let mut violations = compare(&outcomes, rows, touched_by);
    if let Some(caused) = &caused {
        match caused {
            Ok(caused) => {
                let settings = fault::Settings {
                    reaped_within_ms: (config.meter.heartbeat_timeout_seconds + config.meter.reap_interval_seconds)
                        as i64
                        * 1000,
                };
                let report = fault::report(caused, &outcomes, rows, &settings);
                println!("{report}");
                violations.extend(report.violations);
            }
            Err(e) => {
                failed = true;
                println!("FAULT NOT CAUSED: {e:#}");
            }
        }
    }
    if violations.is_empty() {
        println!("charges: every session charged no more than its user saw, and short by at most 1 s plus time away");
    } else {
        failed = true;
        println!("CHARGE VIOLATIONS: {}", violations.len());
        for v in &violations {
            println!("  {v}");
        }
    }
    let audit = metering::audit::audit(&pool).await.context("running the audit")?;
    println!("audit: {}", if audit.passed() { "passed" } else { "FAILED" });
    if !audit.passed() {
        failed = true;
        println!("{audit}");
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The sessions of `rooms`, once none is active any more (or after `limit`).
struct Books {
    /// Per room, its sessions folded into one: charges summed, the last one's
    /// end (a user who rejoins a room that died with its node starts a new
    /// session there).
    rooms: HashMap<String, Row>,
    /// Sessions beyond one per room.
    repeated: usize,
    /// Rooms where two sessions were open at once (a double charge).
    overlapping: Vec<String>,
}

async fn closed_rows(pool: &PgPool, rooms: &[String], limit: Duration) -> Result<Books> {
    let until = Instant::now() + limit;
    loop {
        let rows = sqlx::query!(
            r#"SELECT room_name, status AS "status!", end_reason, charged_ms, rate_ms_per_second, worker_id,
                      (extract(epoch FROM start_time) * 1000)::bigint AS "started_ms!",
                      (extract(epoch FROM end_time) * 1000)::bigint AS ended_ms
               FROM voice_sessions WHERE room_name = ANY($1) ORDER BY start_time"#,
            rooms
        )
        .fetch_all(pool)
        .await
        .context("reading the load's sessions")?;
        if !(rows.iter().all(|r| r.status != "active") || Instant::now() >= until) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let mut books = Books { rooms: HashMap::new(), repeated: 0, overlapping: Vec::new() };
        for r in rows {
            let row = Row {
                room_name: r.room_name,
                status: r.status,
                end_reason: r.end_reason,
                charged_ms: r.charged_ms,
                rate_ms_per_second: r.rate_ms_per_second,
                worker_id: r.worker_id,
                ended_ms: r.ended_ms,
            };
            match books.rooms.get_mut(&row.room_name) {
                None => {
                    books.rooms.insert(row.room_name.clone(), row);
                }
                Some(before) => {
                    books.repeated += 1;
                    // Same persona, same rate: the charges add up.
                    if before.ended_ms.is_none_or(|end| r.started_ms + 1000 < end) {
                        books.overlapping.push(row.room_name.clone());
                    }
                    let charged = before.charged_ms + row.charged_ms;
                    *before = Row { charged_ms: charged, ..row };
                }
            }
        }
        return Ok(books);
    }
}

fn percentiles(mut v: Vec<Duration>) -> String {
    if v.is_empty() {
        return "n/a".into();
    }
    v.sort();
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0;
    format!("p50 {:.0} ms  p99 {:.0} ms  (n = {})", at(0.5), at(0.99), v.len())
}

/// Signed milliseconds: the least, p1, p50, p99 and the most.
fn spread(mut v: Vec<i64>) -> String {
    if v.is_empty() {
        return "n/a".into();
    }
    v.sort_unstable();
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    format!(
        "min {} ms  p1 {} ms  p50 {} ms  p99 {} ms  max {} ms  (n = {})",
        v[0],
        at(0.01),
        at(0.5),
        at(0.99),
        v[v.len() - 1],
        v.len()
    )
}

fn summary(outcomes: &[Outcome], rows: &HashMap<String, Row>) -> String {
    let started: Vec<Duration> = outcomes.iter().filter_map(|o| o.to_started).collect();
    let transit: Vec<Duration> = outcomes.iter().filter_map(|o| o.started_transit).collect();
    let hang_ups: Vec<Duration> = outcomes.iter().filter_map(|o| o.hang_up).collect();
    let mut per_worker: BTreeMap<&str, usize> = BTreeMap::new();
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for r in rows.values() {
        *per_worker.entry(r.worker_id.as_deref().unwrap_or("none")).or_default() += 1;
        *reasons.entry(r.end_reason.as_deref().unwrap_or(r.status.as_str())).or_default() += 1;
    }
    let away = outcomes.iter().filter(|o| !o.away.is_zero()).count();
    let mut s = format!(
        "visits {}  sessions {}  stepped away and back {}\n\
         dispatch -> agent active (join to `started`): {}\n\
         `started` on its way (sent to the user's receipt): {}\n\
         hang-up latency (balance out to removal): {}\n\
         sessions per worker:",
        outcomes.len(),
        rows.len(),
        away,
        percentiles(started),
        percentiles(transit),
        percentiles(hang_ups)
    );
    for (w, n) in &per_worker {
        s.push_str(&format!(" {w}={n}"));
    }
    s.push_str("\nend reasons:");
    for (r, n) in &reasons {
        s.push_str(&format!(" {r}={n}"));
    }
    s
}

/// Per session the fault did not touch: charged time plus the time away,
/// less the time seen (what [`compare`] bounds), in milliseconds.
fn charge_errors(outcomes: &[Outcome], rows: &HashMap<String, Row>, fault: Option<&fault::Caused>) -> Vec<i64> {
    outcomes
        .iter()
        .filter_map(|o| {
            let seen = o.served()?;
            let row = rows.get(&o.room).filter(|r| r.status != "active")?;
            if fault.is_some_and(|f| f.touched(o, Some(row))) {
                return None;
            }
            let charged_ms = row.charged_ms * 1000 / row.rate_ms_per_second.max(1);
            Some(charged_ms + o.away.as_millis() as i64 - seen.as_millis() as i64)
        })
        .collect()
}

/// Per session: charged time (card time over the rate) against what the user
/// saw (`started` to their leaving, removal or the agent's leaving). Charged
/// never exceeds the seconds seen (a second begun counts as seen), and falls
/// short by at most one second plus the time away; a session the fault
/// touched may fall further short (the user's favour, shown in the fault's
/// report), never over.
fn compare(outcomes: &[Outcome], rows: &HashMap<String, Row>, fault: Option<&fault::Caused>) -> Vec<String> {
    let mut out = Vec::new();
    for o in outcomes {
        let (Some(seen), false) = (o.served(), o.room.is_empty()) else { continue };
        let touched = fault.is_some_and(|f| f.touched(o, rows.get(&o.room)));
        let Some(row) = rows.get(&o.room) else {
            out.push(format!("{}: the user saw `started` but there is no session row", o.room));
            continue;
        };
        if row.status == "active" {
            out.push(format!("{}: still active after every user left", o.room));
            continue;
        }
        let charged_ms = row.charged_ms * 1000 / row.rate_ms_per_second.max(1);
        let seen_ms = seen.as_millis() as i64;
        let seen_seconds_ms = (seen_ms + 999) / 1000 * 1000;
        let away_ms = o.away.as_millis() as i64;
        if charged_ms > seen_seconds_ms {
            out.push(format!(
                "{}: charged {charged_ms} ms, more than the {seen_ms} ms the user saw ({:?}, {:?}; `started` took {:?})",
                o.room, o.plan, row.end_reason, o.started_transit
            ));
        } else if charged_ms + 1000 + away_ms < seen_ms && !touched {
            out.push(format!(
                "{}: charged {charged_ms} ms, short of the {seen_ms} ms seen by more than 1 s + {away_ms} ms away ({:?}, {:?}{})",
                o.room,
                o.plan,
                row.end_reason,
                o.mic_quiet.map_or(String::new(), |q| format!("; the user's microphone last sent {} ms before they left", q.as_millis()))
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(sessions: usize, seconds: u64) -> LoadArgs {
        LoadArgs {
            sessions,
            seconds,
            cluster: PathBuf::from("."),
            persona: "professor-ada".into(),
            fault: None,
            fault_at: None,
            cluster_script: PathBuf::from("scripts/cluster.sh"),
        }
    }

    fn env(livekit: &str) -> HashMap<String, String> {
        [
            ("LIVEKIT_URL", livekit),
            ("MINDBOT_CLUSTER_API_URL", "http://127.0.0.1:7730"),
            ("DATABASE_URL", "postgres://u:p@127.0.0.1:5432/mindbot_cluster"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn counts_and_durations_outside_the_bounds_are_refused_naming_the_flag() {
        let ok = env("ws://127.0.0.1:7701");
        assert!(check(&args(300, 600), &ok).is_ok());
        for (a, flag) in [(args(0, 10), "--sessions"), (args(1001, 10), "--sessions"), (args(5, 3601), "--seconds")] {
            let e = check(&a, &ok).unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
    }

    #[test]
    fn a_cluster_that_is_not_on_this_machine_is_refused_naming_the_url() {
        let e = check(&args(5, 10), &env("wss://livekit.example.com")).unwrap_err().to_string();
        assert!(e.contains("LIVEKIT_URL") && e.contains("livekit.example.com"), "{e}");
    }

    fn outcome(room: &str, seen_ms: u64, away_ms: u64) -> Outcome {
        Outcome {
            room: room.into(),
            to_started: Some(Duration::from_millis(300)),
            seen: Some(Duration::from_millis(seen_ms)),
            away: Duration::from_millis(away_ms),
            ..Outcome::new(Plan::Stay(Duration::from_secs(10)), 2)
        }
    }

    fn row(room: &str, charged_ms: i64, rate: i64) -> (String, Row) {
        let r = Row {
            room_name: room.into(),
            status: "ended".into(),
            end_reason: Some("user_left".into()),
            charged_ms,
            rate_ms_per_second: rate,
            worker_id: None,
            ended_ms: None,
        };
        (room.to_string(), r)
    }

    #[test]
    fn a_charge_within_the_seen_second_and_one_second_short_passes_and_beyond_either_fails() {
        let rows: HashMap<String, Row> = [
            row("a", 10_400, 1000), // seen 10.2 s: within the 11th second begun
            row("b", 9_300, 1000),  // seen 10.2 s: 0.9 s short
            row("c", 11_100, 1000), // more than the seconds seen
            row("d", 8_000, 1000),  // 2.2 s short, never away
            row("e", 6_000, 1000),  // 4.2 s short, 3.5 s of it away
            row("f", 12_500, 1250), // 10 s of time at a 1.25 multiplier
        ]
        .into_iter()
        .collect();
        let outcomes = [
            outcome("a", 10_200, 0),
            outcome("b", 10_200, 0),
            outcome("c", 10_200, 0),
            outcome("d", 10_200, 0),
            outcome("e", 10_200, 3_500),
            outcome("f", 10_200, 0),
        ];
        let v = compare(&outcomes, &rows, None);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].starts_with("c: charged 11100 ms, more than"), "{v:?}");
        assert!(v[1].starts_with("d: charged 8000 ms, short"), "{v:?}");
    }

    #[test]
    fn the_charge_spread_adds_time_away_back_and_skips_sessions_still_open() {
        let mut rows: HashMap<String, Row> =
            [row("a", 10_000, 1000), row("b", 6_000, 1000), row("c", 12_500, 1250), row("d", 3_000, 1000)]
                .into_iter()
                .collect();
        rows.get_mut("d").unwrap().status = "active".into();
        let outcomes = [
            outcome("a", 10_200, 0),
            outcome("b", 10_200, 3_500),
            outcome("c", 9_400, 0),
            outcome("d", 10_200, 0),
            outcome("e", 10_200, 0), // no session row
        ];
        assert_eq!(charge_errors(&outcomes, &rows, None), vec![-200, -700, 600]);
        assert_eq!(
            spread(vec![600, -200, -700]),
            "min -700 ms  p1 -700 ms  p50 -200 ms  p99 600 ms  max 600 ms  (n = 3)"
        );
        assert_eq!(spread(Vec::new()), "n/a");
    }

    #[test]
    fn a_second_agent_after_a_span_without_one_counts_and_the_span_does_not() {
        // The room's node went at 53 s; the user was back at 53.5 s to no
        // agent; a dispatched-again agent's `started` came at 74 s; the user
        // left at 100 s. Both sessions' charges are the room's.
        let mut o = outcome("g", 100_000, 0);
        o.agent_gaps = vec![(Duration::from_millis(53_500), Some(Duration::from_secs(74)))];
        assert_eq!(o.served(), Some(Duration::from_millis(79_500)));
        let rows: HashMap<String, Row> = [row("g", 53_000 + 26_000, 1000)].into_iter().collect();
        assert!(compare(std::slice::from_ref(&o), &rows, None).is_empty());
        let over: HashMap<String, Row> = [row("g", 83_000, 1000)].into_iter().collect();
        assert_eq!(compare(std::slice::from_ref(&o), &over, None).len(), 1);
        // No agent came back: served to the gap's start.
        o.agent_gaps = vec![(Duration::from_millis(53_500), None)];
        assert_eq!(o.served(), Some(Duration::from_millis(53_500)));
    }
}
