//! What tests sharing one process must take turns at.
//!
//! A crate's integration tests run as one binary, in parallel threads, each
//! `#[sqlx::test]` on a runtime of its own; tokio's mutex works across
//! runtimes, so a guard may be held over `.await`. One lock per resource,
//! never one for everything: tests that need none of them still run side by
//! side.

use tokio::sync::{Mutex, MutexGuard};

static MACHINE: Mutex<()> = Mutex::const_new(());

/// Held by the tests that load the whole machine for a while and measure
/// what the service does meanwhile (a request flood, the local voice models,
/// a cluster under load), and by those whose Python user speaks and listens
/// in real time (`tests/clients/talker.py`): two of them at once would
/// measure each other, and two talkers with their recognisers starved each
/// other into holes in what they sent (a hum taken for speech, in CI).
pub async fn whole_machine() -> MutexGuard<'static, ()> {
    MACHINE.lock().await
}
