//! The SQL behind the meter. Every state change is one transaction; a tick
//! batch for all of a worker's live sessions is a constant number of
//! statements (sessions locked, cards locked, three array writes), however
//! many sessions it carries.
//!
//! - [`ticks`]: the per-second writes: one batch charges every live session
//!   of a worker and heartbeats it.
//! - [`lifecycle`]: a session's row from open to close: open, close, closing
//!   a room's sessions, reaping orphans, reading one back.
//!
//! Every statement is a compile-time checked `sqlx` macro. Typed ids
//! (`SessionId`, `UserId`, `CardId`) are bound `as _`: they are transparent
//! UUIDs, which the macros' type check does not see through.

pub mod lifecycle;
pub mod ticks;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sqlx::PgPool;

pub use lifecycle::CloseSession;
pub use ticks::{TickEntry, TickOutcome, TickResult};

/// The database side of metering, with a count of statements sent (for the
/// benchmark's statements per second).
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    statements: Arc<AtomicU64>,
}

impl Store {
    pub fn new(pool: PgPool) -> Store {
        Store { pool, statements: Arc::new(AtomicU64::new(0)) }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Statements sent so far by tick batches, opens and closes.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    fn count(&self, n: u64) {
        self.statements.fetch_add(n, Ordering::Relaxed);
    }
}
