//! Access levels (`free` < `basic` < `premium`) and how a user's
//! subscriptions map to one. Pure: the subscriptions are read elsewhere
//! ([`crate::usage::subscriptions_of`]) and handed in with the time to judge
//! them at.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use mindbot_schema::records::Subscription;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Denial, PersonaError};

/// How much of the catalog a user may reach; ordered, so `Free < Basic < Premium`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLevel {
    /// Everyone, with or without a subscription.
    Free,
    /// Any granting subscription, unless its plan maps higher.
    Basic,
    /// Only plans mapped to `premium`.
    Premium,
}

impl AccessLevel {
    /// Every level, lowest first.
    pub const ALL: [AccessLevel; 3] = [AccessLevel::Free, AccessLevel::Basic, AccessLevel::Premium];

    /// The level as the `access_level` string of the `PersonaConfig` interface.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLevel::Free => "free",
            AccessLevel::Basic => "basic",
            AccessLevel::Premium => "premium",
        }
    }
}

impl fmt::Display for AccessLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AccessLevel {
    type Err = PersonaError;

    /// Exactly `free`, `basic` or `premium`; anything else names the field.
    fn from_str(s: &str) -> Result<AccessLevel, PersonaError> {
        AccessLevel::ALL.into_iter().find(|level| level.as_str() == s).ok_or_else(|| {
            PersonaError::invalid("access_level", format!("unknown level {s:?} (expected free, basic or premium)"))
        })
    }
}

impl<'de> Deserialize<'de> for AccessLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AccessLevel, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|_| {
            serde::de::Error::custom(format_args!("unknown access level {text:?} (expected free, basic or premium)"))
        })
    }
}

/// Which access level each subscription plan grants, from the deployment's
/// configuration (a TOML table such as `{ pro = "premium", starter = "basic" }`).
/// A granting subscription whose plan is not listed grants `basic`: paying
/// users get more than free users even before operators list a new plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PlanLevels(BTreeMap<String, AccessLevel>);

impl PlanLevels {
    /// A mapping from plan ids to levels.
    pub fn new<I, S>(plans: I) -> PlanLevels
    where
        I: IntoIterator<Item = (S, AccessLevel)>,
        S: Into<String>,
    {
        PlanLevels(plans.into_iter().map(|(plan, level)| (plan.into(), level)).collect())
    }

    /// The level a granting subscription to `plan_id` gives (`basic` if unlisted).
    pub fn level_of(&self, plan_id: &str) -> AccessLevel {
        self.0.get(plan_id).copied().unwrap_or(AccessLevel::Basic)
    }

    /// The user's level at `now`: the highest level among subscriptions that
    /// grant at `now` ([`Subscription::grants_at`]), `free` if none does.
    pub fn user_level(&self, subscriptions: &[Subscription], now: DateTime<Utc>) -> AccessLevel {
        subscriptions
            .iter()
            .filter(|sub| sub.grants_at(now))
            .map(|sub| self.level_of(&sub.plan_id))
            .max()
            .unwrap_or(AccessLevel::Free)
    }
}

/// Refuses when the persona's `required` level is above the user's.
pub fn check_level(required: AccessLevel, have: AccessLevel) -> Result<(), Denial> {
    if required <= have {
        Ok(())
    } else {
        Err(Denial::AccessDenied { required, have })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use mindbot_schema::records::SubscriptionStatus;
    use mindbot_schema::UserId;
    use uuid::Uuid;

    fn sub(plan: &str, status: SubscriptionStatus, start_days: i64, end_days: i64) -> Subscription {
        let now = now();
        Subscription {
            id: Uuid::new_v4(),
            user_id: UserId(Uuid::nil()),
            plan_id: plan.to_string(),
            status,
            current_period_start: now + Duration::days(start_days),
            current_period_end: now + Duration::days(end_days),
            cancel_at_period_end: false,
            stripe_subscription_id: None,
            created_at: now,
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 14, 12, 0, 0).unwrap()
    }

    fn plans() -> PlanLevels {
        PlanLevels::new([
            ("pro", AccessLevel::Premium),
            ("starter", AccessLevel::Basic),
            ("free-tier", AccessLevel::Free),
        ])
    }

    #[test]
    fn levels_are_ordered_free_basic_premium() {
        assert!(AccessLevel::Free < AccessLevel::Basic && AccessLevel::Basic < AccessLevel::Premium);
        assert_eq!("premium".parse::<AccessLevel>().unwrap(), AccessLevel::Premium);
    }

    #[test]
    fn unknown_level_text_is_refused_naming_access_level() {
        let err = "gold".parse::<AccessLevel>().unwrap_err();
        assert_eq!(err.field(), Some("access_level"));
        assert!(serde_json::from_str::<AccessLevel>("\"Premium\"").is_err());
    }

    #[test]
    fn no_subscription_means_free() {
        assert_eq!(plans().user_level(&[], now()), AccessLevel::Free);
    }

    #[test]
    fn highest_granting_plan_wins() {
        let subs = [sub("starter", SubscriptionStatus::Active, -1, 1), sub("pro", SubscriptionStatus::Trialing, -1, 1)];
        assert_eq!(plans().user_level(&subs, now()), AccessLevel::Premium);
    }

    #[test]
    fn unknown_plan_of_a_granting_subscription_is_basic() {
        let subs = [sub("enterprise-2031", SubscriptionStatus::Active, -1, 1)];
        assert_eq!(plans().user_level(&subs, now()), AccessLevel::Basic);
    }

    #[test]
    fn canceled_past_due_and_expired_subscriptions_grant_nothing() {
        let subs = [
            sub("pro", SubscriptionStatus::Canceled, -1, 1),
            sub("pro", SubscriptionStatus::PastDue, -1, 1),
            sub("pro", SubscriptionStatus::Incomplete, -1, 1),
            sub("pro", SubscriptionStatus::Active, -30, 0),
            sub("pro", SubscriptionStatus::Active, 1, 30),
        ];
        assert_eq!(plans().user_level(&subs, now()), AccessLevel::Free);
    }

    #[test]
    fn period_start_is_inclusive_and_end_exclusive() {
        assert_eq!(plans().user_level(&[sub("pro", SubscriptionStatus::Active, 0, 1)], now()), AccessLevel::Premium);
        assert_eq!(plans().user_level(&[sub("pro", SubscriptionStatus::Active, -1, 0)], now()), AccessLevel::Free);
    }

    #[test]
    fn plan_levels_load_from_a_toml_table() {
        let plans: PlanLevels = toml::from_str("pro = \"premium\"\nstarter = \"basic\"").unwrap();
        assert_eq!(plans.level_of("pro"), AccessLevel::Premium);
        assert!(toml::from_str::<PlanLevels>("pro = \"gold\"").is_err());
    }

    #[test]
    fn level_check_refuses_only_when_required_is_higher() {
        assert!(check_level(AccessLevel::Basic, AccessLevel::Premium).is_ok());
        assert!(check_level(AccessLevel::Basic, AccessLevel::Basic).is_ok());
        match check_level(AccessLevel::Premium, AccessLevel::Basic) {
            Err(Denial::AccessDenied { required, have }) => {
                assert_eq!((required, have), (AccessLevel::Premium, AccessLevel::Basic))
            }
            other => panic!("expected AccessDenied, got {other:?}"),
        }
    }
}
