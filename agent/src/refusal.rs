//! Why a session is refused before anything is charged: one enum shared by
//! the worker (the `reason` of the `refused` message the user receives on
//! `mindbot.session`, and the label of `mindbot_sessions_refused_total`) and
//! the public API (the error `code` and status of `POST /v1/sessions`), so
//! both say the same thing for the same cause. The human sentence is the
//! error that caused the refusal; this type names the cause.
//!
//! It knows no transport: the status is a number the API turns into its
//! answer, and the worker ignores it.

use personas::{Denial, PersonaError};

/// A cause of refusal, each with its stable code and HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The dispatch metadata is not the JSON the worker expects (worker only).
    MalformedMetadata,
    /// No user joined the room in time (worker only).
    NoUser,
    /// The user id is not a user.
    UnknownUser,
    /// The user exists but is not active.
    InactiveUser,
    /// The balance does not pay for a session with this persona.
    InsufficientBalance,
    /// The job or (room, user) has an active session already (a re-offered job).
    DuplicateSession,
    /// The persona has a daily limit and the user has a session with it open.
    PersonaSessionOpen,
    /// The user holds as many open sessions and live session tokens as allowed.
    TooManySessions,
    /// No active persona has this slug.
    UnknownPersona,
    /// The persona is not the one quoted when the session token was issued.
    PersonaChanged,
    /// A custom persona the rules refuse (built-in slug, under the pricing floor, invalid).
    PersonaRefused,
    /// The persona needs a higher plan than the user's.
    AccessDenied,
    /// The persona's minimum age is not met by the user's claim.
    AgeRestricted,
    /// The persona's daily allowance is spent.
    DailyLimit,
    /// The session's overrides are not allowed or not valid.
    InvalidOverrides,
    /// Something failed on our side (the database); nothing about it is told.
    Error,
}

impl Refusal {
    /// The stable, machine-readable code: the worker's `reason`, the API's `error`.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::MalformedMetadata => "malformed_metadata",
            Refusal::NoUser => "no_user",
            Refusal::UnknownUser => "unknown_user",
            Refusal::InactiveUser => "inactive_user",
            Refusal::InsufficientBalance => "insufficient_balance",
            Refusal::DuplicateSession => "duplicate_session",
            Refusal::PersonaSessionOpen => "persona_session_open",
            Refusal::TooManySessions => "too_many_sessions",
            Refusal::UnknownPersona => "unknown_persona",
            Refusal::PersonaChanged => "persona_changed",
            Refusal::PersonaRefused => "persona_refused",
            Refusal::AccessDenied => "access_denied",
            Refusal::AgeRestricted => "age_restricted",
            Refusal::DailyLimit => "daily_limit",
            Refusal::InvalidOverrides => "invalid_overrides",
            Refusal::Error => "error",
        }
    }

    /// The HTTP status the API answers it with.
    pub fn status(self) -> u16 {
        match self {
            Refusal::MalformedMetadata | Refusal::NoUser => 400,
            Refusal::UnknownUser | Refusal::InactiveUser => 401,
            Refusal::InsufficientBalance => 402,
            Refusal::PersonaRefused | Refusal::AccessDenied | Refusal::AgeRestricted | Refusal::DailyLimit => 403,
            Refusal::UnknownPersona => 404,
            Refusal::DuplicateSession | Refusal::PersonaChanged => 409,
            Refusal::InvalidOverrides => 422,
            Refusal::PersonaSessionOpen | Refusal::TooManySessions => 429,
            Refusal::Error => 500,
        }
    }

    /// The refusal a persona error stands for; [`Refusal::Error`] for the
    /// ones that are our fault (the database, a built-in persona file).
    pub fn of_persona(e: &PersonaError) -> Refusal {
        match e {
            PersonaError::NotFound { .. } => Refusal::UnknownPersona,
            PersonaError::Changed { .. } => Refusal::PersonaChanged,
            PersonaError::BuiltinSlug { .. } | PersonaError::BelowPricingFloor { .. } | PersonaError::Custom { .. } => {
                Refusal::PersonaRefused
            }
            PersonaError::Denied(d) => Refusal::of_denial(d),
            PersonaError::OverrideNotAllowed { .. } | PersonaError::InvalidOverride { .. } => Refusal::InvalidOverrides,
            _ => Refusal::Error,
        }
    }

    /// The refusal an access rule's denial stands for.
    pub fn of_denial(d: &Denial) -> Refusal {
        match d {
            Denial::AccessDenied { .. } => Refusal::AccessDenied,
            Denial::AgeRestricted { .. } => Refusal::AgeRestricted,
            Denial::DailyLimitReached { .. } => Refusal::DailyLimit,
        }
    }

    /// The refusal a metering error at session open or reservation stands
    /// for; [`Refusal::Error`] for the rest (the database).
    pub fn of_metering(e: &metering::Error) -> Refusal {
        match e {
            metering::Error::UserNotFound { .. } => Refusal::UnknownUser,
            metering::Error::UserInactive { .. } => Refusal::InactiveUser,
            metering::Error::InsufficientBalance { .. } => Refusal::InsufficientBalance,
            metering::Error::DuplicateSession { .. } => Refusal::DuplicateSession,
            metering::Error::PersonaSessionOpen { .. } => Refusal::PersonaSessionOpen,
            metering::Error::TooManySessions { .. } => Refusal::TooManySessions,
            _ => Refusal::Error,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use personas::AccessLevel;

    #[test]
    fn persona_denials_and_errors_map_to_the_codes_the_worker_and_the_api_send() {
        let denied =
            PersonaError::from(Denial::AccessDenied { required: AccessLevel::Premium, have: AccessLevel::Free });
        assert_eq!(
            (Refusal::of_persona(&denied).code(), Refusal::of_persona(&denied).status()),
            ("access_denied", 403)
        );
        let late = PersonaError::from(Denial::DailyLimitReached { limit_minutes: 30, used_minutes: 30 });
        assert_eq!(Refusal::of_persona(&late), Refusal::DailyLimit);
        let missing = PersonaError::NotFound { slug: "nobody".into() };
        assert_eq!(
            (Refusal::of_persona(&missing).code(), Refusal::of_persona(&missing).status()),
            ("unknown_persona", 404)
        );
        let broken = PersonaError::Syntax { reason: "not TOML".into() };
        assert_eq!(Refusal::of_persona(&broken), Refusal::Error);
        let poor = metering::Error::InsufficientBalance { available: metering::Millis(0), multiplier: "1.0".into() };
        assert_eq!(
            (Refusal::of_metering(&poor).code(), Refusal::of_metering(&poor).status()),
            ("insufficient_balance", 402)
        );
    }
}
