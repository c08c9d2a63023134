//! What can be wrong with a value read into a record, named for the value.

use crate::money::RateError;

/// Errors of the schema crate: a text that is not the id, status or
/// multiplier it should be, or a tier that cannot make a card.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {value:?} is not a valid UUID")]
    InvalidId { what: &'static str, value: String },
    #[error("unknown {what} {value:?}")]
    UnknownValue { what: &'static str, value: String },
    #[error(transparent)]
    Rate(#[from] RateError),
    #[error("pricing tier {id:?}: {why}")]
    InvalidTier { id: String, why: &'static str },
}
