//! Metering for mindbot-agent: time cards, the per-second meter, its ledger
//! and audit, over PostgreSQL. Knows nothing of LiveKit or HTTP: a caller
//! opens a metered session for a user at a rate, the meter charges every
//! second the caller says the session is live, and tells the caller when the
//! money runs out. Hanging up is the caller's job.
//!
//! The pieces, in the order a session meets them:
//! - [`money`], [`records`], [`ids`]: exact integer card time and
//!   multipliers, the seed's data objects, typed ids; these live in
//!   `mindbot-schema` (shared with `personas`) and are re-exported here.
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
pub mod ledger;
pub mod meter;
pub mod reservations;
pub mod rewards;
pub mod session;
pub mod store;
pub(crate) mod users;

pub use error::{Error, Result};
// The shared records live in `mindbot-schema`; re-exported so a caller of
// metering names cards, users and money without a second dependency.
/// A bad id, status or multiplier in a record, as [`Error::Record`] carries it.
pub use mindbot_schema::Error as RecordError;
pub use mindbot_schema::{ids, money, records, MIGRATOR};
pub use mindbot_schema::{CardId, Millis, Rate, SessionId, UserId};
