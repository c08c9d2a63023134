//! The records mindbot-agent's crates share, next to the migrations that
//! define their tables: `metering` (money) and `personas` (who may talk to
//! whom) both read these rows, so neither owns them. This crate runs no
//! query; it says what a row is.
//!
//! - [`ids`]: typed identifiers (`UserId`, `CardId`, `SessionId`).
//! - [`money`]: exact integer card time ([`Millis`]) and multipliers
//!   ([`Rate`]); the arithmetic only, never a balance change (that is
//!   `metering`'s).
//! - [`records`]: the seed's data objects and their select lists.
//! - [`MIGRATOR`]: the `NNNN_*.sql` files of this directory, embedded.
//!
//! The SQL files stay plain and numbered in the crate's root, readable
//! without Rust; `sqlx::migrate!` takes only files named
//! `<version>_<description>.sql`, so `Cargo.toml`, `build.rs` and `src/`
//! are not migrations.

pub mod error;
pub mod ids;
pub mod money;
pub mod records;

pub use error::Error;
pub use ids::{CardId, SessionId, UserId, UNCLAIMED_CARDS_OWNER};
pub use money::{Millis, Rate, RateError};

/// The migrations in this directory, embedded so the binary can apply them.
/// (Named through the parent: `sqlx::migrate!` refuses a path without a
/// directory part, such as `"."`.)
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
