//! The test kit: what the integration tests of every crate repeat, in one
//! place, so each test says only what it checks.
//!
//! - [`seed`]: the seed schema document and rows written its way.
//! - [`db`]: the URL of a test's database, users, tiers and cards.
//! - [`livekit`]: the dev LiveKit server the scripts start, tokens, the
//!   server API, and private servers a test may stop and start.
//! - [`speech`]: a private copy of the test speech services.
//! - [`lock`]: what tests in one process must not use at the same time.
//! - [`proxy`]: a TCP proxy in front of PostgreSQL that a test can cut.
//!
//! Database tests use `#[sqlx::test(migrations = "../migrations")]`, which
//! needs `DATABASE_URL` in the environment (e.g.
//! `postgres://mindbot:mindbot@127.0.0.1:5432/mindbot`, started by
//! `scripts/postgres.sh`).

use std::path::PathBuf;

pub mod db;
pub mod livekit;
pub mod lock;
pub mod proxy;
pub mod seed;
pub mod speech;

pub use db::url_for;
pub use seed::*;

/// The workspace's root directory (where `scripts/` and `.cache/` are).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `bash <script> [arg]` from the root (the scripts install and start
/// what a test needs, reusing what runs already); panics if it fails.
pub fn ensure(script: &str, arg: Option<&str>) {
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(root().join(script)).current_dir(root());
    if let Some(a) = arg {
        cmd.arg(a);
    }
    assert!(cmd.status().expect(script).success(), "{script} failed");
}

/// Installs a log subscriber once per process (RUST_LOG picks the level).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
