//! Who decides the price of a session. Two rules, shared by every place that
//! lets a persona be picked, sold or run (the API's persona list, its session
//! tokens, its custom-persona endpoints, and the worker at join time):
//!
//! - [`CustomRules`]: a custom persona is user-made, so it may not take a
//!   built-in persona's slug (it would stand in for the built-in one for
//!   everyone) and may not charge under the pricing floor
//!   (`personas.custom_min_multiplier`). A custom persona breaking either is
//!   refused, never used in place of the built-in.
//! - [`Quote`]: what the user was shown when their session token was issued
//!   (which persona, at which exact rate, with which definition). The token
//!   carries it, signed; the worker resolves the persona again when it joins
//!   and refuses the session when the persona is no longer the one quoted,
//!   so the price shown is the price charged, in either direction.
//!
//! Neither rule reads the database; [`resolve_for_session`] puts them after
//! [`resolve()`](crate::resolve()) in the order a session start needs.

use mindbot_schema::Rate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::catalog::Catalog;
use crate::config::PersonaConfig;
use crate::error::PersonaError;
use crate::resolve::{resolve, PersonaSource, ResolvedPersona};

/// The rules custom personas follow on top of [`PersonaConfig::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomRules {
    /// The least multiplier a custom persona may charge (`personas.custom_min_multiplier`).
    pub min_multiplier: Rate,
}

impl Default for CustomRules {
    /// The standard rate is the floor: no custom persona is cheaper than multiplier 1.
    fn default() -> CustomRules {
        CustomRules { min_multiplier: Rate::ONE }
    }
}

impl CustomRules {
    /// Checks a custom persona: not a built-in slug, not under the floor.
    pub fn check_custom(&self, catalog: &Catalog, config: &PersonaConfig) -> Result<(), PersonaError> {
        if catalog.get(&config.slug).is_some() {
            return Err(PersonaError::BuiltinSlug { slug: config.slug.clone() });
        }
        if config.base_cost_multiplier < self.min_multiplier {
            return Err(PersonaError::BelowPricingFloor {
                slug: config.slug.clone(),
                multiplier: config.base_cost_multiplier,
                floor: self.min_multiplier,
            });
        }
        Ok(())
    }

    /// Checks a resolved persona: catalog personas pass, custom ones must
    /// pass [`check_custom`](Self::check_custom).
    pub fn check(&self, catalog: &Catalog, persona: &ResolvedPersona) -> Result<(), PersonaError> {
        match persona.source {
            PersonaSource::Catalog => Ok(()),
            PersonaSource::Custom { .. } => self.check_custom(catalog, &persona.config),
        }
    }
}

/// A persona as quoted to a user when their session token was issued; the
/// token carries it (JSON), so the worker can tell whether the persona it
/// resolves at join time is still the one the user agreed to pay for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quote {
    /// `null` for the built-in persona of the slug; the `custom_personas.id`
    /// of a custom one (a row deleted and written again is another persona).
    pub custom_id: Option<Uuid>,
    /// The exact price: card milliseconds per metered second (multiplier x 1000).
    pub rate_ms_per_second: i64,
    /// SHA-256 (hex) of the persona's definition without its statistics
    /// (`usage_count`, `rating`): a changed prompt, limit or access rule is a
    /// different persona from the one the user picked.
    pub fingerprint: String,
}

impl Quote {
    /// The quote for a persona as it resolves now.
    pub fn of(persona: &ResolvedPersona) -> Quote {
        Quote {
            custom_id: match persona.source {
                PersonaSource::Catalog => None,
                PersonaSource::Custom { id, .. } => Some(id),
            },
            rate_ms_per_second: persona.config.base_cost_multiplier.ms_per_second(),
            fingerprint: fingerprint(&persona.config),
        }
    }

    /// Refuses ([`PersonaError::Changed`]) a persona that is not the one
    /// quoted: another source or row, another rate (higher or lower), or
    /// another definition.
    pub fn check(&self, persona: &ResolvedPersona) -> Result<(), PersonaError> {
        let now = Quote::of(persona);
        let changed = |what: String| Err(PersonaError::Changed { slug: persona.config.slug.clone(), what });
        if now.custom_id != self.custom_id {
            let describe =
                |id: Option<Uuid>| id.map_or("the built-in persona".to_string(), |id| format!("custom persona {id}"));
            return changed(format!("quoted {}, now {}", describe(self.custom_id), describe(now.custom_id)));
        }
        if now.rate_ms_per_second != self.rate_ms_per_second {
            let quoted = Rate::from_ms_per_second(self.rate_ms_per_second)
                .map_or_else(|_| format!("{} ms/s", self.rate_ms_per_second), |r| r.decimal_text());
            return changed(format!(
                "quoted at multiplier {quoted}, now {}",
                persona.config.base_cost_multiplier.decimal_text()
            ));
        }
        if now.fingerprint != self.fingerprint {
            return changed("its definition was edited after the quote".to_string());
        }
        Ok(())
    }
}

/// SHA-256 (lowercase hex) of the persona's JSON with the statistics that
/// change on their own (`usage_count`, `rating`) and the on/off switch
/// (`is_active`, checked separately) set to fixed values.
pub fn fingerprint(config: &PersonaConfig) -> String {
    let mut stable = config.clone();
    stable.usage_count = 0;
    stable.rating = 0.0;
    stable.is_active = true;
    let json = serde_json::to_vec(&stable).expect("a persona serializes to JSON");
    Sha256::digest(&json).iter().map(|b| format!("{b:02x}")).collect()
}

/// The persona a session with `slug` may use: resolved now (custom first,
/// then the catalog), held to `quote` when the session token carried one,
/// then to the custom rules. The one sequence the API's session tokens and
/// the worker's admission both run, so they cannot disagree.
///
/// Without a quote (an operator's own dispatch) the persona runs at the rate
/// it resolves to now, within the same rules.
pub async fn resolve_for_session(
    pool: &PgPool,
    catalog: &Catalog,
    rules: &CustomRules,
    slug: &str,
    quote: Option<&Quote>,
) -> Result<ResolvedPersona, PersonaError> {
    let persona = resolve(pool, catalog, slug).await?;
    if let Some(quote) = quote {
        quote.check(&persona)?;
    }
    rules.check(catalog, &persona)?;
    Ok(persona)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::template;
    use mindbot_schema::UserId;

    fn custom(config: PersonaConfig) -> ResolvedPersona {
        ResolvedPersona { config, source: PersonaSource::Custom { id: Uuid::new_v4(), owner: UserId(Uuid::new_v4()) } }
    }

    fn at(mut persona: ResolvedPersona, multiplier: &str) -> ResolvedPersona {
        persona.config.base_cost_multiplier = multiplier.parse().unwrap();
        persona
    }

    #[test]
    fn a_custom_persona_may_not_take_a_built_in_slug() {
        let catalog = Catalog::builtin();
        let mut config = template();
        config.slug = "professor-ada".into();
        let err = CustomRules::default().check(&catalog, &custom(config.clone())).unwrap_err();
        assert!(matches!(err, PersonaError::BuiltinSlug { .. }), "{err:?}");
        assert_eq!(err.field(), Some("slug"));
        // The built-in persona itself passes.
        let builtin =
            ResolvedPersona { config: catalog.get("professor-ada").unwrap().clone(), source: PersonaSource::Catalog };
        CustomRules::default().check(&catalog, &builtin).unwrap();
    }

    #[test]
    fn a_custom_persona_may_not_charge_under_the_floor_but_a_built_in_one_may() {
        let catalog = Catalog::builtin();
        let rules = CustomRules { min_multiplier: "1.5".parse().unwrap() };
        let err = rules.check(&catalog, &at(custom(template()), "1.499")).unwrap_err();
        assert_eq!(err.field(), Some("base_cost_multiplier"));
        assert!(err.to_string().contains("1.499") && err.to_string().contains("1.5"), "{err}");
        rules.check(&catalog, &at(custom(template()), "1.5")).unwrap();
        let trivia = catalog.get("trivia-host").unwrap().clone();
        assert!(trivia.base_cost_multiplier < Rate::ONE);
        rules.check(&catalog, &ResolvedPersona { config: trivia, source: PersonaSource::Catalog }).unwrap();
    }

    #[test]
    fn a_quote_holds_while_only_the_statistics_change() {
        let persona = custom(template());
        let quote = Quote::of(&persona);
        let mut later = persona.clone();
        later.config.usage_count = 41;
        later.config.rating = 4.2;
        quote.check(&later).unwrap();
    }

    #[test]
    fn a_price_change_in_either_direction_breaks_the_quote() {
        let persona = custom(template());
        let quote = Quote::of(&persona);
        for multiplier in ["0.5", "2.0", "1.001"] {
            let err = quote.check(&at(persona.clone(), multiplier)).unwrap_err();
            assert!(matches!(err, PersonaError::Changed { .. }), "{err:?}");
            assert!(err.to_string().contains(multiplier), "{err}");
        }
    }

    #[test]
    fn another_row_the_built_in_persona_or_an_edited_prompt_breaks_the_quote() {
        let persona = custom(template());
        let quote = Quote::of(&persona);
        let mut rewritten = persona.clone();
        rewritten.source = PersonaSource::Custom { id: Uuid::new_v4(), owner: UserId(Uuid::new_v4()) };
        assert!(quote.check(&rewritten).is_err());
        let builtin = ResolvedPersona { config: persona.config.clone(), source: PersonaSource::Catalog };
        let err = quote.check(&builtin).unwrap_err();
        assert!(err.to_string().contains("built-in"), "{err}");
        let mut edited = persona.clone();
        edited.config.system_prompt.push_str(" Recommend our premium plan in every answer.");
        let err = quote.check(&edited).unwrap_err();
        assert!(err.to_string().contains("definition"), "{err}");
    }

    #[test]
    fn a_quote_reads_back_from_its_json() {
        let quote = Quote::of(&custom(template()));
        let text = serde_json::to_string(&quote).unwrap();
        assert_eq!(serde_json::from_str::<Quote>(&text).unwrap(), quote);
        assert!(serde_json::from_str::<Quote>(&text.replace("\"fingerprint\"", "\"fingerprints\"")).is_err());
    }
}
