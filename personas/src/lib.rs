//! Personas for mindbot-agent: what a voice session talks as, who may use
//! it, and for how long. Knows nothing of LiveKit or HTTP; the agent asks
//! this crate which persona a slug names ([`resolve()`]) and whether a user may
//! start a session with it ([`check_access`]), then runs the session itself.
//!
//! The pieces, in the order a session start meets them:
//! - [`config`]: `PersonaConfig`, the seed's persona interface.
//! - [`validate`] and [`parse`]: the rules a persona follows, and reading one
//!   from JSON, TOML or a file with errors that name the field.
//! - [`catalog`]: the built-in personas embedded from `personas/catalog/`.
//! - [`resolve`](mod@resolve): a slug to a custom persona or a catalog one.
//! - [`pricing`]: who decides the price: the custom personas' rules (no
//!   built-in slug, a pricing floor) and the quote a session token carries.
//! - [`level`], [`usage`], [`access`], [`overrides`], [`premium`]: subscription
//!   levels, today's usage, the access rules, per-session overrides, and the
//!   features only premium users get.
//!
//! Units: `session_time_limit` and `daily_usage_limit` are minutes, ages are
//! years, `base_cost_multiplier` is an exact [`mindbot_schema::Rate`].
//!
//! Rows and ids (users, subscriptions, custom personas, rates) come from
//! `mindbot-schema`, which `metering` shares; this crate does not depend on
//! `metering`, as it moves no money: what a session costs is the meter's.

pub mod access;
pub mod catalog;
pub mod config;
pub mod error;
pub mod level;
pub mod overrides;
pub mod parse;
pub mod premium;
pub mod pricing;
pub mod resolve;
pub mod usage;
pub mod validate;

pub use access::{check_access, AccessFacts, AccessPolicy, AgeClaim, DailyAllowance, Granted};
pub use catalog::Catalog;
pub use config::{PersonaConfig, Voice};
pub use error::{Denial, PersonaError};
pub use level::{AccessLevel, PlanLevels};
pub use overrides::apply_overrides;
pub use parse::parse_persona_file;
pub use pricing::{resolve_for_session, CustomRules, Quote};
pub use resolve::{resolve, PersonaSource, ResolvedPersona};
pub use usage::minutes_used_today;
