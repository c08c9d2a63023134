//! The seed's data objects as Rust types, serialized exactly as the seed's
//! TypeScript interfaces say: the same field names, `null` where an interface
//! allows it, timestamps as RFC 3339 strings, and status enums limited to the
//! listed values (an unknown value is an error that names it).
//!
//! Columns the seed declares nullable but the interfaces do not (a
//! `created_at` with a default, a tier's `description`) are read through the
//! `*_COLUMNS` select lists below, which coalesce them to the interface's type.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{CardId, SessionId, UserId};
use crate::money::{Millis, Rate};
use crate::Error;

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, as the seed's CHECK constraint lists them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(Error::UnknownValue { what: $what, value: other.to_string() }),
                }
            }
        }

        text_column!($name);
    };
}

/// Reads and writes a type as a TEXT column through its `FromStr`, so a bad
/// value in the database is a decode error naming that value.
macro_rules! text_column {
    ($name:ident) => {
        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <String as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <String as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Ok(text.parse::<$name>()?)
            }
        }
    };
}

text_enum!(/// `time_cards.status`.
    CardStatus, "card status" {
    Pending => "pending", Active => "active", Expired => "expired", Used => "used", Refunded => "refunded",
});

text_enum!(/// `voice_sessions.status`.
    SessionStatus, "voice session status" {
    Active => "active", Completed => "completed", Error => "error", Cancelled => "cancelled",
});

text_enum!(/// `user_subscriptions.status`.
    SubscriptionStatus, "subscription status" {
    Active => "active", Canceled => "canceled", PastDue => "past_due", Trialing => "trialing", Incomplete => "incomplete",
});

/// `users`, as the `User` interface: the password hash is not part of it and
/// is never read into this type, so it cannot be serialized by accident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub full_name: String,
    pub created_at: DateTime<Utc>,
    pub last_login: Option<DateTime<Utc>>,
    pub is_active: bool,
    pub email_verified: bool,
}

/// Select list for [`User`].
pub const USER_COLUMNS: &str = "id, email, full_name, COALESCE(created_at, NOW()) AS created_at, last_login, \
     COALESCE(is_active, TRUE) AS is_active, COALESCE(email_verified, FALSE) AS email_verified";

/// `time_cards`, as the `TimeCard` interface. The exact sub-minute part of
/// the balance is not in the interface; it is carried beside it unserialized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(deny_unknown_fields)]
pub struct TimeCard {
    pub id: CardId,
    pub user_id: UserId,
    pub activation_code: String,
    pub total_minutes: i32,
    pub remaining_minutes: i32,
    pub activated_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub status: CardStatus,
    pub stripe_payment_intent_id: Option<String>,
    #[serde(skip)]
    pub remaining_sub_ms: i32,
    /// Suspended while its payment is disputed: pays for nothing. Not in the
    /// interface (the seed's status stays what it was).
    #[serde(skip)]
    pub suspended: bool,
    /// Earned by rewarded ad views (`kind = 'earned'`), not paid for: pays
    /// only for sessions with ad-supported personas. Not in the interface.
    #[serde(skip)]
    pub earned: bool,
}

impl TimeCard {
    /// The exact balance.
    pub fn balance(&self) -> Millis {
        Millis::from_parts(self.remaining_minutes, self.remaining_sub_ms)
    }
}

/// Select list for [`TimeCard`].
pub const CARD_COLUMNS: &str = "id, user_id, activation_code, total_minutes, remaining_minutes, activated_at, \
     expires_at, COALESCE(created_at, NOW()) AS created_at, COALESCE(status, 'pending') AS status, \
     stripe_payment_intent_id, remaining_sub_ms, suspended_at IS NOT NULL AS suspended, kind = 'earned' AS earned";

/// A compile-time checked `query_as!` for [`TimeCard`]s: the statement is
/// `$head`, the select list [`CARD_COLUMNS`] says (with the overrides the
/// macro needs), then `$tail`; the arguments follow. Keep the two lists
/// alike: this one for `sqlx::query_as!`, the constant for runtime queries.
#[macro_export]
macro_rules! query_time_cards {
    ($head:tt, $tail:tt $(, $arg:expr)* $(,)?) => {
        ::sqlx::query_as!(
            mindbot_schema::records::TimeCard,
            $head
                + "id AS \"id: _\", user_id AS \"user_id: _\", activation_code, total_minutes, remaining_minutes, \
                   activated_at, expires_at, COALESCE(created_at, NOW()) AS \"created_at!\", \
                   COALESCE(status, 'pending') AS \"status!: _\", stripe_payment_intent_id, remaining_sub_ms, \
                   suspended_at IS NOT NULL AS \"suspended!\", kind = 'earned' AS \"earned!\""
                + $tail
            $(, $arg)*
        )
    };
}

/// `voice_sessions`, as the `VoiceSession` interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(deny_unknown_fields)]
pub struct VoiceSession {
    pub id: SessionId,
    pub user_id: UserId,
    pub session_id: String,
    pub room_name: String,
    pub start_time: DateTime<Utc>,
    pub end_time: Option<DateTime<Utc>>,
    pub duration_seconds: Option<i32>,
    pub cost_minutes: Option<i32>,
    pub status: SessionStatus,
    pub agent_type: String,
    pub quality_rating: Option<i32>,
}

/// Select list for [`VoiceSession`].
pub const VOICE_SESSION_COLUMNS: &str =
    "id, user_id, session_id, room_name, COALESCE(start_time, NOW()) AS start_time, \
     end_time, duration_seconds, cost_minutes, COALESCE(status, 'active') AS status, \
     COALESCE(agent_type, 'production') AS agent_type, quality_rating";

/// `user_subscriptions`, as the `Subscription` interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    pub id: Uuid,
    pub user_id: UserId,
    pub plan_id: String,
    pub status: SubscriptionStatus,
    pub current_period_start: DateTime<Utc>,
    pub current_period_end: DateTime<Utc>,
    pub cancel_at_period_end: bool,
    pub stripe_subscription_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Subscription {
    /// Whether this subscription grants its plan at `now`: `active` or
    /// `trialing`, and `now` inside the current period.
    pub fn grants_at(&self, now: DateTime<Utc>) -> bool {
        matches!(self.status, SubscriptionStatus::Active | SubscriptionStatus::Trialing)
            && self.current_period_start <= now
            && now < self.current_period_end
    }
}

/// Select list for [`Subscription`].
pub const SUBSCRIPTION_COLUMNS: &str = "id, user_id, plan_id, status, current_period_start, current_period_end, \
     COALESCE(cancel_at_period_end, FALSE) AS cancel_at_period_end, stripe_subscription_id, \
     COALESCE(created_at, NOW()) AS created_at";

/// `pricing_tiers`, as the `PricingTier` interface (a NULL description reads
/// as the empty string the interface's `string` allows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(deny_unknown_fields)]
pub struct PricingTier {
    pub id: String,
    pub name: String,
    pub hours: i32,
    pub price_cents: i32,
    pub bonus_minutes: i32,
    pub description: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

impl PricingTier {
    /// Minutes on a card issued from this tier: `hours * 60 + bonus_minutes`.
    pub fn card_minutes(&self) -> Result<i32, Error> {
        self.hours.checked_mul(60).and_then(|m| m.checked_add(self.bonus_minutes)).filter(|m| *m > 0).ok_or_else(|| {
            Error::InvalidTier { id: self.id.clone(), why: "hours * 60 + bonus_minutes must be positive" }
        })
    }
}

/// Select list for [`PricingTier`].
pub const TIER_COLUMNS: &str = "id, name, hours, price_cents, COALESCE(bonus_minutes, 0) AS bonus_minutes, \
     COALESCE(description, '') AS description, COALESCE(active, TRUE) AS active, COALESCE(created_at, NOW()) AS created_at";

/// A compile-time checked `query_as!` for [`PricingTier`]s, as
/// [`query_time_cards!`] is for cards (the list of [`TIER_COLUMNS`]).
#[macro_export]
macro_rules! query_pricing_tiers {
    ($head:tt, $tail:tt $(, $arg:expr)* $(,)?) => {
        ::sqlx::query_as!(
            mindbot_schema::records::PricingTier,
            $head
                + "id, name, hours, price_cents, COALESCE(bonus_minutes, 0) AS \"bonus_minutes!\", \
                   COALESCE(description, '') AS \"description!\", COALESCE(active, TRUE) AS \"active!\", \
                   COALESCE(created_at, NOW()) AS \"created_at!\""
                + $tail
            $(, $arg)*
        )
    };
}

/// A row of `payment_history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(deny_unknown_fields)]
pub struct Payment {
    pub id: Uuid,
    pub user_id: UserId,
    pub stripe_payment_intent_id: String,
    pub amount_cents: i32,
    pub currency: String,
    pub status: String,
    pub time_card_id: Option<CardId>,
    pub created_at: DateTime<Utc>,
    pub metadata: Option<serde_json::Value>,
}

/// Select list for [`Payment`].
pub const PAYMENT_COLUMNS: &str =
    "id, user_id, stripe_payment_intent_id, amount_cents, COALESCE(currency, 'usd') AS currency, \
     status, time_card_id, COALESCE(created_at, NOW()) AS created_at, metadata";

/// A row of `persona_sessions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(deny_unknown_fields)]
pub struct PersonaSession {
    pub id: Uuid,
    pub user_id: UserId,
    pub persona_slug: String,
    pub session_id: String,
    pub duration_minutes: Option<i32>,
    pub cost_multiplier: RateText,
    pub created_at: DateTime<Utc>,
}

/// Select list for [`PersonaSession`].
pub const PERSONA_SESSION_COLUMNS: &str = "id, user_id, persona_slug, session_id, duration_minutes, \
     COALESCE(cost_multiplier, 1.0)::text AS cost_multiplier, COALESCE(created_at, NOW()) AS created_at";

/// A multiplier read from a DECIMAL column (as text, so exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RateText(pub Rate);

impl FromStr for RateText {
    type Err = crate::money::RateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(RateText)
    }
}

text_column!(RateText);

/// A row of `persona_ratings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(deny_unknown_fields)]
pub struct PersonaRating {
    pub id: Uuid,
    pub user_id: UserId,
    pub persona_slug: String,
    pub rating: i32,
    pub feedback: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Select list for [`PersonaRating`].
pub const PERSONA_RATING_COLUMNS: &str =
    "id, user_id, persona_slug, rating, feedback, COALESCE(created_at, NOW()) AS created_at";

/// A row of `custom_personas`; `personas` turns `config` plus
/// `system_prompt` into a `PersonaConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(deny_unknown_fields)]
pub struct CustomPersona {
    pub id: Uuid,
    pub user_id: UserId,
    pub slug: String,
    pub name: String,
    pub config: serde_json::Value,
    pub system_prompt: String,
    pub created_at: DateTime<Utc>,
    pub is_active: bool,
    pub usage_count: i32,
    /// Mean rating, 0 to 5 (a statistic, not money).
    #[serde(serialize_with = "finite_number")]
    pub rating: f64,
}

/// Select list for [`CustomPersona`].
pub const CUSTOM_PERSONA_COLUMNS: &str =
    "id, user_id, slug, name, config, system_prompt, COALESCE(created_at, NOW()) AS created_at, \
     COALESCE(is_active, TRUE) AS is_active, COALESCE(usage_count, 0) AS usage_count, \
     COALESCE(rating, 0)::float8 AS rating";

/// A row of `ad_interactions`. `revenue` is read as exact decimal text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(deny_unknown_fields)]
pub struct AdInteraction {
    pub id: Uuid,
    pub user_id: UserId,
    pub ad_id: String,
    pub ad_type: String,
    pub view_duration: i32,
    pub completed: bool,
    pub interacted: bool,
    #[serde(with = "decimal_number")]
    pub revenue: String,
    pub created_at: DateTime<Utc>,
}

/// Select list for [`AdInteraction`].
pub const AD_INTERACTION_COLUMNS: &str = "id, user_id, ad_id, ad_type, view_duration, COALESCE(completed, FALSE) AS completed, \
     COALESCE(interacted, FALSE) AS interacted, COALESCE(revenue, 0)::text AS revenue, COALESCE(created_at, NOW()) AS created_at";

/// A number that JSON can carry: NaN and infinities (which a DECIMAL column
/// can hold) are an error rather than a silent `null`.
fn finite_number<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if !v.is_finite() {
        return Err(serde::ser::Error::custom(format!("{v} is not a finite number")));
    }
    s.serialize_f64(*v)
}

/// A DECIMAL column kept as its exact text in Rust and written to JSON as a
/// number (the interfaces' `number`).
mod decimal_number {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
        let n: f64 = v.parse().map_err(serde::ser::Error::custom)?;
        super::finite_number(&n, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let n = f64::deserialize(d)?;
        if !n.is_finite() {
            return Err(serde::de::Error::custom(format!("{n} is not a decimal number")));
        }
        Ok(n.to_string())
    }
}
