//! The built-in personas: one TOML file per persona in `personas/catalog/`,
//! named after its slug and embedded in the binary at compile time, so a
//! worker needs no files on disk to serve them. A test checks that every
//! file in the folder is listed here and valid.

use crate::config::PersonaConfig;
use crate::error::PersonaError;

/// The catalog files, as (file name, contents), compiled into the binary.
const BUILTIN: &[(&str, &str)] = &[
    ("executive-coach.toml", include_str!("../catalog/executive-coach.toml")),
    ("fitness-coach.toml", include_str!("../catalog/fitness-coach.toml")),
    ("language-buddy.toml", include_str!("../catalog/language-buddy.toml")),
    ("late-night-comic.toml", include_str!("../catalog/late-night-comic.toml")),
    ("professor-ada.toml", include_str!("../catalog/professor-ada.toml")),
    ("story-weaver.toml", include_str!("../catalog/story-weaver.toml")),
    ("trivia-host.toml", include_str!("../catalog/trivia-host.toml")),
];

/// A set of validated personas with distinct slugs, looked up by slug.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    /// Sorted by slug, so lookups can binary-search.
    personas: Vec<PersonaConfig>,
}

impl Catalog {
    /// The personas shipped in `personas/catalog/`, parsed and validated on
    /// each call (keep the result rather than calling this per session).
    ///
    /// Panics if a built-in file is invalid: that is a build defect the
    /// catalog tests catch, not something a running worker can repair.
    pub fn builtin() -> Catalog {
        Catalog::from_files(BUILTIN).unwrap_or_else(|e| panic!("the built-in persona catalog is invalid: {e}"))
    }

    /// A catalog of the given personas, each validated; slugs must be distinct.
    pub fn new(personas: impl IntoIterator<Item = PersonaConfig>) -> Result<Catalog, PersonaError> {
        let mut personas: Vec<PersonaConfig> = personas.into_iter().collect();
        for persona in &personas {
            persona.validate()?;
        }
        personas.sort_by(|a, b| a.slug.cmp(&b.slug));
        if let Some(pair) = personas.windows(2).find(|pair| pair[0].slug == pair[1].slug) {
            return Err(PersonaError::invalid("slug", format!("{:?} is used by two personas", pair[0].slug)));
        }
        Ok(Catalog { personas })
    }

    /// Parses TOML persona files given as (file name, contents); each file
    /// must be named `<slug>.toml`.
    fn from_files(files: &[(&str, &str)]) -> Result<Catalog, PersonaError> {
        let mut personas = Vec::with_capacity(files.len());
        for (file, text) in files {
            let in_file = |error: PersonaError| PersonaError::File { path: file.into(), error: Box::new(error) };
            let persona = PersonaConfig::from_toml_str(text).map_err(in_file)?;
            if file.strip_suffix(".toml") != Some(persona.slug.as_str()) {
                return Err(in_file(PersonaError::invalid(
                    "slug",
                    format!("{:?} does not match the file name", persona.slug),
                )));
            }
            personas.push(persona);
        }
        Catalog::new(personas)
    }

    /// The persona with this slug, active or not.
    pub fn get(&self, slug: &str) -> Option<&PersonaConfig> {
        self.personas.binary_search_by(|p| p.slug.as_str().cmp(slug)).ok().map(|i| &self.personas[i])
    }

    /// Every persona, ordered by slug.
    pub fn all(&self) -> &[PersonaConfig] {
        &self.personas
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::level::AccessLevel;
    use crate::parse::template;
    use std::collections::BTreeSet;

    #[test]
    fn every_file_in_the_catalog_folder_is_embedded() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/catalog");
        let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| !name.starts_with('.'))
            .collect();
        let embedded: BTreeSet<String> = BUILTIN.iter().map(|(name, _)| name.to_string()).collect();
        assert_eq!(on_disk, embedded, "personas/catalog/ and BUILTIN disagree");
        for (name, text) in BUILTIN {
            let from_disk = std::fs::read_to_string(format!("{dir}/{name}")).unwrap();
            assert_eq!(&from_disk, text, "{name} is embedded from another file");
        }
    }

    #[test]
    fn the_builtin_catalog_is_valid_and_varied() {
        let catalog = Catalog::builtin();
        let all = catalog.all();
        assert!(all.len() >= 6);
        assert!(all.iter().all(|p| p.is_active && p.created_by == "mindbot"));
        assert!(all.iter().any(|p| p.base_cost_multiplier.ms_per_second() < 1000), "one multiplier below 1");
        assert!(all.iter().any(|p| p.base_cost_multiplier.ms_per_second() > 2000), "one multiplier above 2");
        assert!(all.iter().any(|p| p.ad_supported));
        assert!(all.iter().any(|p| p.access_level == AccessLevel::Premium));
        assert!(all.iter().any(|p| p.age_restriction == Some(18)));
        assert!(all.iter().any(|p| p.session_time_limit.is_some()));
        assert!(all.iter().any(|p| p.daily_usage_limit.is_some()));
        assert!(all.iter().any(|p| !p.user_customizable_fields.is_empty()));
        assert!(all.iter().all(|p| p.system_prompt.len() > 200), "every persona has a real system prompt");
    }

    #[test]
    fn lookup_is_by_exact_slug() {
        let catalog = Catalog::builtin();
        assert_eq!(catalog.get("professor-ada").unwrap().name, "Professor Ada");
        assert!(catalog.get("Professor-Ada").is_none());
        assert!(catalog.get("nobody").is_none());
    }

    #[test]
    fn duplicate_slugs_are_refused() {
        let err = Catalog::new([template(), template()]).unwrap_err();
        assert_eq!(err.field(), Some("slug"));
    }

    #[test]
    fn a_file_named_differently_from_its_slug_is_refused() {
        let text = include_str!("../catalog/professor-ada.toml");
        let err = Catalog::from_files(&[("tutor.toml", text)]).unwrap_err();
        assert_eq!(err.field(), Some("slug"));
        assert!(err.to_string().starts_with("tutor.toml: "), "{err}");
    }
}
