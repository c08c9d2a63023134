//! Metering for mindbot-agent: time cards, the per-second meter, its ledger
//! and audit, over PostgreSQL. Knows nothing of LiveKit or HTTP: a caller
//! opens a metered session for a user at a rate, the meter charges every
//! second the caller says the session is live, and tells the caller when the
//! money runs out. Hanging up is the caller's job.
//!
//! The pieces, in the order a session meets them:
//! - [`money`]: exact integer card time and multipliers.
//! - [`records`]: the seed's data objects.
//! - [`cards`]: issuing, activating, expiring and refunding time cards.
//! - [`balance`]: what a user holds and can afford.
//! - [`reservations`]: places held by issued session tokens.
//! - [`rewards`]: earned cards from rewarded ad views, and the ad report.
//! - [`session`]: what a metered session is opened with and why it ended.
//! - [`meter`]: live sessions, ticks batched per worker, warnings, exhaustion.
//! - [`store`]: the SQL behind the meter: [`store::ticks`] (tick batches) and
//!   [`store::lifecycle`] (open, close, reaping).
//! - [`audit`]: the invariants, checked over the whole database.

pub mod audit;
pub mod balance;
pub mod cards;
pub mod error;
pub mod ids;
pub mod ledger;
pub mod meter;
pub mod money;
pub mod records;
pub mod reservations;
pub mod rewards;
pub mod session;
pub mod store;
pub(crate) mod users;

pub use error::{Error, Result};
pub use ids::{CardId, SessionId, UserId};
pub use money::{Millis, Rate};

/// The migrations in `migrations/`, embedded so the binary can apply them.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
