//! Typed identifiers, so a card id can never be passed where a user id goes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = crate::Error;
            fn from_str(s: &str) -> Result<Self, crate::Error> {
                Uuid::parse_str(s.trim())
                    .map($name)
                    .map_err(|_| crate::Error::InvalidId { what: $what, value: s.to_string() })
            }
        }
    };
}

id_type!(/// A row of `users`.
    UserId, "user id");
id_type!(/// A row of `time_cards`.
    CardId, "card id");
id_type!(/// A row of `voice_sessions` (its `id`, not the textual `session_id`).
    SessionId, "voice session id");

/// The owner of issued cards nobody has activated yet (created by the
/// metering migration; inactive, cannot log in).
pub const UNCLAIMED_CARDS_OWNER: UserId = UserId(Uuid::nil());
