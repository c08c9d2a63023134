//! What can go wrong in metering, named for what happened.

use crate::ids::{CardId, SessionId, UserId};
use crate::money::Millis;

/// Errors of the metering crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value that is not what its record says (an id, a status, a
    /// multiplier), or a tier that cannot make a card.
    #[error(transparent)]
    Record(#[from] mindbot_schema::Error),
    #[error("pricing tier {id:?} not found or not active")]
    TierNotFound { id: String },
    #[error("user {user} not found")]
    UserNotFound { user: UserId },
    #[error("user {user} is not active")]
    UserInactive { user: UserId },
    #[error("a granted card's balance must be from 0 ms to 2^31 - 1 minutes, not {balance_ms} ms")]
    InvalidGrant { balance_ms: i64 },
    #[error("card {card} not found")]
    CardNotFound { card: CardId },
    #[error("activation code {code:?} is not valid")]
    BadActivationCode { code: String },
    #[error("activation code {code:?} has already been used")]
    CodeAlreadyUsed { code: String },
    #[error("card {card} is already active for this user")]
    CardAlreadyActive { card: CardId },
    #[error("too many failed activation attempts; try again in {retry_after_secs} s")]
    ActivationRateLimited { retry_after_secs: u64 },
    #[error("card {card} cannot be refunded: it is {status}")]
    RefundNotAllowed { card: CardId, status: String },
    #[error("card {card} cannot be refunded: {used} of its time has been used")]
    RefundPartlyUsed { card: CardId, used: Millis },
    #[error("insufficient balance: {available} covers less than one second at multiplier {multiplier}")]
    InsufficientBalance { available: Millis, multiplier: String },
    #[error("voice session {session} not found")]
    SessionNotFound { session: SessionId },
    #[error("voice session {session} is already closed")]
    SessionClosed { session: SessionId },
    #[error("tick {seq} for session {session} does not follow the last applied tick {last}")]
    TickOutOfOrder { session: SessionId, seq: i64, last: i64 },
    #[error("a session in the batch changed meanwhile (closed elsewhere); the batch was rolled back")]
    ConcurrentChange,
    #[error("{open} sessions or session tokens are open already (max_open_sessions = {max}); end one first")]
    TooManySessions { open: i64, max: u32 },
    #[error("persona {persona:?} has a daily limit and a session or token of it is open already; end it first")]
    PersonaSessionOpen { persona: String },
    #[error("a session is active already for job {job:?} or for this user in room {room:?}")]
    DuplicateSession { job: String, room: String },
    #[error("the meter has shut down")]
    MeterStopped,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl Error {
    /// Whether this error means the database could not be reached (as
    /// opposed to refusing what was asked), so the caller may retry.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Database(e) => {
                matches!(
                    e,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                        | sqlx::Error::Tls(_)
                ) || matches!(e, sqlx::Error::Database(d) if d.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")))
            }
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
