//! `[personas]`: the default persona, the time zone of daily limits, the
//! custom personas' pricing floor and which access level each subscription
//! plan grants. Every value is parsed into its type here (a time zone, an
//! exact rate, access levels), with an error naming the key.

use std::collections::BTreeMap;

use anyhow::Result;
use chrono_tz::Tz;
use metering::Rate;
use personas::{AccessLevel, AccessPolicy, CustomRules, PlanLevels};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonaSettings {
    /// Persona used when a job names none.
    pub default: String,
    /// Time zone in which "today" is counted for daily usage limits.
    #[serde(deserialize_with = "timezone")]
    pub timezone: Tz,
    /// The least multiplier a custom persona may charge (exact decimal text in the file, `"1.0"`).
    #[serde(deserialize_with = "min_multiplier")]
    pub custom_min_multiplier: Rate,
    /// Subscription plan id to access level.
    #[serde(deserialize_with = "plan_levels")]
    pub plan_levels: BTreeMap<String, AccessLevel>,
}

fn timezone<'de, D: Deserializer<'de>>(d: D) -> Result<Tz, D::Error> {
    let name = String::deserialize(d)?;
    name.parse().map_err(|_| D::Error::custom(format!("config key personas.timezone: unknown time zone {name:?}")))
}

fn min_multiplier<'de, D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|e| D::Error::custom(format!("config key personas.custom_min_multiplier: {e}")))
}

fn plan_levels<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, AccessLevel>, D::Error> {
    let named = BTreeMap::<String, String>::deserialize(d)?;
    named
        .into_iter()
        .map(|(plan, level)| match level.parse() {
            Ok(l) => Ok((plan, l)),
            Err(_) => {
                Err(D::Error::custom(format!("config key personas.plan_levels.{plan}: unknown access level {level:?}")))
            }
        })
        .collect()
}

impl PersonaSettings {
    pub(super) fn validate(&self) -> Result<()> {
        personas::validate::check_slug(&self.default)
            .map_err(|e| anyhow::anyhow!("config key personas.default: {e}"))?;
        Ok(())
    }

    /// The custom personas' rules (the pricing floor).
    pub fn custom_rules(&self) -> CustomRules {
        CustomRules { min_multiplier: self.custom_min_multiplier }
    }

    /// The access rules' settings: plan levels and the time zone of "today".
    pub fn access_policy(&self) -> AccessPolicy {
        AccessPolicy { plans: PlanLevels::new(self.plan_levels.clone()), timezone: self.timezone }
    }
}
