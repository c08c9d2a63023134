//! The cluster of `scripts/cluster.sh`, small: two LiveKit nodes sharing
//! Redis behind HAProxy, the public API and two workers, one PostgreSQL
//! database (the test's). `mindbot-agent bench load` drives six users at a
//! time through it for 20 s; the test checks that the workers registered on
//! different nodes through the load balancer, that both ran sessions, and
//! that the load's own per-session charge comparison and the audit passed.
//! Five seconds in, a rolling deploy (`scripts/cluster.sh fault
//! rolling-deploy`) SIGTERMs each worker in turn and starts it again: no
//! visit may fail (a draining worker's jobs go to the other), and a session
//! the drain ends must have had its whole drain and a user who meant to stay.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use mindbot_tests::{root, url_for as database_url};
use sqlx::PgPool;

/// Ports 7750-7799, apart from a developer's cluster on 7700.
const PORT_BASE: &str = "7750";

/// The cluster's settings, for the script and the load generator alike.
fn env(dir: &Path, db: &str) -> Vec<(&'static str, String)> {
    vec![
        ("MINDBOT_CLUSTER_PORT_BASE", PORT_BASE.into()),
        ("MINDBOT_CLUSTER_NODES", "2".into()),
        ("MINDBOT_CLUSTER_WORKERS", "2".into()),
        ("MINDBOT_CLUSTER_DIR", dir.display().to_string()),
        ("MINDBOT_CLUSTER_DATABASE_URL", db.into()),
        ("MINDBOT_AGENT_BIN", env!("CARGO_BIN_EXE_mindbot-agent").into()),
        ("MINDBOT_WORKER_USER_GRACE_SECONDS", "5".into()),
        ("MINDBOT_WORKER_DRAIN_TIMEOUT_SECONDS", "5".into()),
    ]
}

/// Stops the cluster when the test ends, passed or not.
struct Cluster {
    env: Vec<(&'static str, String)>,
}

impl Cluster {
    fn script(&self, action: &str) -> std::process::Output {
        Command::new("bash")
            .arg(root().join("scripts/cluster.sh"))
            .arg(action)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(root())
            .output()
            .expect("running scripts/cluster.sh")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.script("stop");
        // A failed run keeps its logs (the assertion names the directory).
        if !std::thread::panicking() {
            if let Some((_, dir)) = self.env.iter().find(|(k, _)| *k == "MINDBOT_CLUSTER_DIR") {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// Each worker's own id and the LiveKit node it registered on, from its log.
fn workers(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for n in 1..=2 {
        let log = std::fs::read_to_string(dir.join(format!("worker-{n}/server.log"))).unwrap_or_default();
        let after = |key: &str| {
            log.lines()
                .find_map(|l| l.split(key).nth(1))
                .map(|v| v.trim_start_matches('"').split(['"', ' ']).next().unwrap_or("").to_string())
        };
        let id = after("waiting for jobs worker_id=").unwrap_or_else(|| panic!("worker {n} never registered:\n{log}"));
        let node = after(" node=").unwrap_or_else(|| panic!("worker {n} logged no node:\n{log}"));
        out.insert(id, node);
    }
    out
}

#[sqlx::test(migrations = "../migrations")]
async fn six_users_at_a_time_through_haproxy_reach_workers_on_both_nodes_and_every_charge_matches(pool: PgPool) {
    // Loads the machine for a while: not beside another such test (see the kit's lock).
    let _machine = mindbot_tests::lock::whole_machine().await;
    let dir = std::env::temp_dir().join(format!("mindbot-cluster-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cluster = Cluster { env: env(&dir, &database_url(&pool)) };
    let started = cluster.script("start");
    assert!(
        started.status.success(),
        "scripts/cluster.sh start failed (logs in {}):\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&started.stdout),
        String::from_utf8_lossy(&started.stderr)
    );

    // The workers as they first registered (the rolling deploy starts new ones).
    let workers = workers(&dir);
    let load = Command::new(env!("CARGO_BIN_EXE_mindbot-agent"))
        .args(["bench", "load", "--sessions", "6", "--seconds", "20", "--fault", "rolling-deploy", "--fault-at", "5"])
        .envs(cluster.env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "warn")
        .current_dir(root())
        .output()
        .expect("running mindbot-agent bench load");
    let report = String::from_utf8_lossy(&load.stdout).into_owned();
    assert!(
        load.status.success(),
        "bench load failed (cluster logs in {}):\n{report}\n{}",
        dir.display(),
        String::from_utf8_lossy(&load.stderr)
    );
    // The figures, for the CI log (cargo test -- --nocapture).
    println!("{report}");
    assert!(report.contains("audit: passed"), "{report}");
    assert!(report.contains("every session charged no more than its user saw"), "{report}");
    assert!(report.contains("fault rolling-deploy: 5 s into the run"), "{report}");
    let faults = std::fs::read_to_string(dir.join("faults.log")).unwrap();
    for (step, n) in [("sigterm", 2), ("exited", 2), ("ready", 2)] {
        assert_eq!(faults.lines().filter(|l| l.split(' ').nth(1) == Some(step)).count(), n, "{faults}");
    }

    // The workers reached LiveKit through HAProxy, one on each node.
    let nodes: BTreeSet<&String> = workers.values().collect();
    assert_eq!(nodes.len(), 2, "both workers on one node: {workers:?}");
    // Both took jobs, and every session closed as its user left.
    let per_worker: Vec<(Option<String>, i64)> =
        sqlx::query_as("SELECT worker_id, count(*) FROM voice_sessions WHERE room_name IS NOT NULL GROUP BY worker_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let busy: BTreeSet<&String> = per_worker.iter().filter(|(_, n)| *n > 0).filter_map(|(w, _)| w.as_ref()).collect();
    assert!(workers.keys().all(|w| busy.contains(w)), "sessions per worker {per_worker:?}, workers {workers:?}");
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM voice_sessions WHERE status = 'active'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(open, 0, "{report}");
}
