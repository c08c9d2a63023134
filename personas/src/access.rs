//! Whether a user may start a session with a persona, and with what settings.
//! Each rule is a plain function of facts; [`check_access`] applies them in a
//! fixed order (active, level, age, daily limit, overrides) and returns the
//! first refusal: a [`Denial`] (level, age, daily limit) when the rules
//! refuse this user, another [`PersonaError`] when the persona or the
//! overrides are at fault. [`AccessFacts::load`]
//! gathers the facts from PostgreSQL.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use mindbot_schema::UserId;
use serde_json::Value;
use sqlx::PgPool;

use crate::config::PersonaConfig;
use crate::error::{Denial, PersonaError};
use crate::level::{check_level, AccessLevel, PlanLevels};
use crate::overrides::apply_overrides;
use crate::usage::{minutes_used_today, user_level};

/// The age a user has claimed, in whole years; `None` when they have not said.
pub type AgeClaim = Option<u32>;

/// The deployment's settings the access rules depend on.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    /// Which level each subscription plan grants.
    pub plans: PlanLevels,
    /// The time zone whose midnight resets daily usage limits.
    pub timezone: Tz,
}

/// What is known about the user when a session with one persona starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessFacts {
    /// The level the user's subscriptions grant now.
    pub level: AccessLevel,
    /// The user's claimed age.
    pub age: AgeClaim,
    /// Minutes already spent with this persona today.
    pub minutes_used_today: i64,
}

impl AccessFacts {
    /// Reads the user's level and today's usage of `slug` from the database.
    pub async fn load(
        pool: &PgPool,
        policy: &AccessPolicy,
        user: UserId,
        slug: &str,
        age: AgeClaim,
        now: DateTime<Utc>,
    ) -> Result<AccessFacts, PersonaError> {
        Ok(AccessFacts {
            level: user_level(pool, &policy.plans, user, now).await?,
            age,
            minutes_used_today: minutes_used_today(pool, user, slug, policy.timezone, now).await?,
        })
    }
}

/// What remains of a persona's daily limit today, in minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyAllowance {
    /// The persona's `daily_usage_limit`.
    pub limit_minutes: i32,
    /// Minutes spent with the persona today.
    pub used_minutes: i64,
    /// Minutes still available today (always positive when granted).
    pub left_minutes: i64,
}

/// A session the rules allow: the persona as it will run, and its caps.
#[derive(Debug, Clone, PartialEq)]
pub struct Granted {
    /// The persona with the session's overrides applied.
    pub persona: PersonaConfig,
    /// Today's allowance, when the persona has a daily limit.
    pub daily: Option<DailyAllowance>,
    /// The persona's premium features this user does not get (below
    /// premium access): left out of `persona`, named for the app.
    pub premium_left_out: Vec<String>,
}

impl Granted {
    /// The session limit that applies: `premium_session_time_limit` when the
    /// grant kept it (premium access), else `session_time_limit`.
    pub fn session_limit_minutes(&self) -> Option<i64> {
        self.persona.premium_session_time_limit.or(self.persona.session_time_limit).map(i64::from)
    }

    /// The most minutes this session may last: the smaller of the session
    /// limit ([`Granted::session_limit_minutes`]) and what is left of today's
    /// allowance; `None` when neither applies (the card balance still does).
    pub fn session_cap_minutes(&self) -> Option<i64> {
        let session = self.session_limit_minutes();
        let daily = self.daily.map(|d| d.left_minutes);
        match (session, daily) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Refuses when the persona has a minimum age and the claim is missing or lower.
pub fn check_age(minimum: Option<i32>, claim: AgeClaim) -> Result<(), Denial> {
    match (minimum, claim) {
        (None, _) => Ok(()),
        (Some(minimum), Some(age)) if i64::from(age) >= i64::from(minimum) => Ok(()),
        (Some(minimum), claim) => Err(Denial::AgeRestricted { minimum, claim }),
    }
}

/// Today's allowance under a daily `limit` (minutes), or a refusal once
/// `used_minutes` has reached it; `None` when there is no limit.
pub fn check_daily_limit(limit: Option<i32>, used_minutes: i64) -> Result<Option<DailyAllowance>, Denial> {
    let Some(limit_minutes) = limit else {
        return Ok(None);
    };
    let left_minutes = i64::from(limit_minutes) - used_minutes;
    if left_minutes <= 0 {
        return Err(Denial::DailyLimitReached { limit_minutes, used_minutes });
    }
    Ok(Some(DailyAllowance { limit_minutes, used_minutes, left_minutes }))
}

/// Every access rule for one session start, in order: the persona is
/// active, the user's level reaches the persona's, the age claim satisfies
/// its restriction, today's usage is under its daily limit, and the
/// overrides (if any) are allowed and valid. Below premium access the
/// persona's premium features are left out (tools dropped, overrides of
/// premium fields ignored), never refused.
pub fn check_access(
    persona: &PersonaConfig,
    facts: &AccessFacts,
    overrides: Option<&Value>,
) -> Result<Granted, PersonaError> {
    if !persona.is_active {
        return Err(PersonaError::NotFound { slug: persona.slug.clone() });
    }
    check_level(persona.access_level, facts.level)?;
    check_age(persona.age_restriction, facts.age)?;
    let daily = check_daily_limit(persona.daily_usage_limit, facts.minutes_used_today)?;
    let (persona, premium_left_out) = crate::premium::for_level(persona, facts.level);
    let persona = match overrides {
        Some(overrides) => apply_overrides(&persona, &crate::premium::without_left_out(overrides, &premium_left_out))?,
        None => persona,
    };
    Ok(Granted { persona, daily, premium_left_out })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::template;
    use serde_json::json;

    fn facts(level: AccessLevel, age: AgeClaim, used: i64) -> AccessFacts {
        AccessFacts { level, age, minutes_used_today: used }
    }

    #[test]
    fn age_claims_are_checked_against_the_minimum() {
        assert!(check_age(None, None).is_ok());
        assert!(check_age(Some(18), Some(18)).is_ok());
        assert!(check_age(Some(18), Some(40)).is_ok());
        assert!(matches!(check_age(Some(18), Some(17)), Err(Denial::AgeRestricted { minimum: 18, claim: Some(17) })));
    }

    #[test]
    fn a_missing_age_claim_is_refused_when_the_persona_is_restricted() {
        let err = check_age(Some(18), None).unwrap_err();
        assert!(matches!(err, Denial::AgeRestricted { minimum: 18, claim: None }));
        assert!(err.to_string().contains("none"), "{err}");
    }

    #[test]
    fn daily_limit_reports_minutes_left_until_reached() {
        assert_eq!(check_daily_limit(None, 10_000).unwrap(), None);
        let allowance = check_daily_limit(Some(30), 12).unwrap().unwrap();
        assert_eq!((allowance.used_minutes, allowance.left_minutes), (12, 18));
        for used in [30, 31] {
            match check_daily_limit(Some(30), used) {
                Err(Denial::DailyLimitReached { limit_minutes: 30, used_minutes }) => {
                    assert_eq!(used_minutes, used)
                }
                other => panic!("expected DailyLimitReached, got {other:?}"),
            }
        }
    }

    #[test]
    fn each_rule_refuses_with_its_own_variant_in_order() {
        let mut persona = template();
        persona.access_level = AccessLevel::Premium;
        persona.age_restriction = Some(18);
        persona.daily_usage_limit = Some(60);
        let err = check_access(&persona, &facts(AccessLevel::Basic, None, 60), None).unwrap_err();
        assert!(matches!(err, PersonaError::Denied(Denial::AccessDenied { .. })), "{err:?}");
        let err = check_access(&persona, &facts(AccessLevel::Premium, Some(16), 60), None).unwrap_err();
        assert!(matches!(err, PersonaError::Denied(Denial::AgeRestricted { .. })), "{err:?}");
        let err = check_access(&persona, &facts(AccessLevel::Premium, Some(30), 60), None).unwrap_err();
        assert!(matches!(err, PersonaError::Denied(Denial::DailyLimitReached { .. })), "{err:?}");
        let bad = json!({"safety": "none"});
        let err = check_access(&persona, &facts(AccessLevel::Premium, Some(30), 0), Some(&bad)).unwrap_err();
        assert!(matches!(err, PersonaError::OverrideNotAllowed { .. }), "{err:?}");
    }

    #[test]
    fn premium_users_get_the_longer_session_limit_and_others_the_usual_one() {
        let mut persona = template();
        persona.session_time_limit = Some(20);
        persona.premium_session_time_limit = Some(60);
        persona.premium_features = vec!["premium_session_time_limit".into()];
        let premium = check_access(&persona, &facts(AccessLevel::Premium, None, 0), None).unwrap();
        assert_eq!((premium.session_cap_minutes(), premium.premium_left_out.len()), (Some(60), 0));
        let basic = check_access(&persona, &facts(AccessLevel::Basic, None, 0), None).unwrap();
        assert_eq!(basic.session_cap_minutes(), Some(20));
        assert_eq!(basic.premium_left_out, vec!["premium_session_time_limit".to_string()]);
    }

    #[test]
    fn an_inactive_persona_is_not_found() {
        let mut persona = template();
        persona.is_active = false;
        let err = check_access(&persona, &facts(AccessLevel::Premium, Some(30), 0), None).unwrap_err();
        assert!(matches!(err, PersonaError::NotFound { ref slug } if slug == "sample-guide"), "{err:?}");
    }

    #[test]
    fn a_grant_carries_the_overridden_persona_and_the_tighter_cap() {
        let mut persona = template();
        persona.session_time_limit = Some(20);
        persona.daily_usage_limit = Some(45);
        let overrides = json!({"voice.style": "bright"});
        let granted = check_access(&persona, &facts(AccessLevel::Free, None, 30), Some(&overrides)).unwrap();
        assert_eq!(granted.persona.voice.style, "bright");
        assert_eq!(granted.session_cap_minutes(), Some(15));
        let granted = check_access(&persona, &facts(AccessLevel::Free, None, 0), None).unwrap();
        assert_eq!(granted.session_cap_minutes(), Some(20));
        assert_eq!(
            check_access(&template(), &facts(AccessLevel::Free, None, 0), None).unwrap().session_cap_minutes(),
            None
        );
    }
}
