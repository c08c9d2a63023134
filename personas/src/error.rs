//! What can go wrong with a persona, one variant per reason, so the agent can
//! tell a caller exactly why a session was refused. A persona that exists and
//! is well formed but is not for this user now is a [`Denial`], its own type
//! (carried here as [`PersonaError::Denied`]), apart from unknown, malformed
//! or changed personas. Nothing here is logged or formatted for a particular
//! transport; that is the agent's job.

use std::path::PathBuf;

use mindbot_schema::Rate;

use crate::level::AccessLevel;

/// Errors of the personas crate.
#[derive(Debug, thiserror::Error)]
pub enum PersonaError {
    /// No active persona, custom or built in, has this slug.
    #[error("persona {slug:?} not found")]
    NotFound { slug: String },
    /// A persona definition breaks a rule; `field` is its name in the
    /// `PersonaConfig` interface (`voice.tts`, `tools[2]`, ...).
    #[error("invalid persona field `{field}`: {reason}")]
    Invalid { field: String, reason: String },
    /// A persona file or text that is not well-formed JSON or TOML at all.
    #[error("malformed persona: {reason}")]
    Syntax { reason: String },
    /// A persona file could not be read.
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    /// Something went wrong inside a persona file; `error` names the field.
    #[error("{path}: {error}")]
    File { path: PathBuf, error: Box<PersonaError> },
    /// A stored custom persona whose `config` does not make a valid persona.
    #[error("custom persona {slug:?}: {error}")]
    Custom { slug: String, error: Box<PersonaError> },
    /// The access rules refuse this user the persona (level, age, daily limit).
    #[error(transparent)]
    Denied(#[from] Denial),
    /// A per-session override names a field the persona does not let users change.
    #[error("field `{field}` cannot be overridden for this persona")]
    OverrideNotAllowed { field: String },
    /// A per-session override of an allowed field has an unusable value.
    #[error("override of `{field}` refused: {reason}")]
    InvalidOverride { field: String, reason: String },
    /// A custom persona uses a built-in persona's slug: it would stand in for
    /// the built-in one for everyone who picks that slug, so it is refused.
    #[error("custom persona {slug:?} uses a built-in persona's slug")]
    BuiltinSlug { slug: String },
    /// A custom persona charges less than the pricing floor
    /// (`personas.custom_min_multiplier`).
    #[error("custom persona {slug:?} has multiplier {multiplier}, below the minimum {floor}")]
    BelowPricingFloor { slug: String, multiplier: Rate, floor: Rate },
    /// The persona is no longer the one quoted when the session token was
    /// issued (another row, another price, another definition).
    #[error("persona {slug:?} changed since the session token was issued: {what}")]
    Changed { slug: String, what: String },
    /// The database refused or could not be reached.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Why the access rules refuse a user a persona that exists and is well
/// formed: not an error in the persona, but a rule about this user now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// The persona needs a higher plan than the user's subscriptions grant.
    #[error("persona requires the {required} level; the user has {have}")]
    AccessDenied { required: AccessLevel, have: AccessLevel },
    /// The persona has a minimum age and the claim is missing or below it.
    #[error("persona requires age {minimum} or over; claimed age: {}", display_claim(*.claim))]
    AgeRestricted { minimum: i32, claim: Option<u32> },
    /// The user has already spent the persona's daily allowance today.
    #[error("daily limit of {limit_minutes} min for this persona reached ({used_minutes} min used today)")]
    DailyLimitReached { limit_minutes: i32, used_minutes: i64 },
}

fn display_claim(claim: Option<u32>) -> String {
    claim.map_or_else(|| "none".to_string(), |age| age.to_string())
}

impl PersonaError {
    /// The persona field this error is about, looking through file and
    /// custom-persona wrappers; `None` when the error is not about a field.
    pub fn field(&self) -> Option<&str> {
        match self {
            PersonaError::Invalid { field, .. }
            | PersonaError::OverrideNotAllowed { field }
            | PersonaError::InvalidOverride { field, .. } => Some(field),
            PersonaError::BuiltinSlug { .. } => Some("slug"),
            PersonaError::BelowPricingFloor { .. } => Some("base_cost_multiplier"),
            PersonaError::File { error, .. } | PersonaError::Custom { error, .. } => error.field(),
            _ => None,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> PersonaError {
        PersonaError::Invalid { field: field.into(), reason: reason.into() }
    }
}
