//! The metering crate's integration tests, one binary: cards, the meter and
//! its clock, revocation and rewards against the real PostgreSQL, with the
//! shared builders in `common`.

mod common;

mod cards;
mod clock;
mod meter;
mod revocation;
mod rewards;
