//! The agent's integration tests, one binary: the real `mindbot-agent`
//! binary (API, worker, CLI, cluster) against the real PostgreSQL, LiveKit
//! server, speech services and the Python end user. Shared setup comes from
//! the test kit (`mindbot-tests`); `api_support` and `e2e` add what needs
//! this crate's binary.
//!
//! The tests run in parallel threads of this one process; what they must not
//! share is serialized by the kit's locks (`mindbot_tests::lock`).

mod api_support;
mod e2e;
mod in_process;
mod worker_support;

mod ads;
mod api;
mod api_flood;
mod api_limits;
mod api_personas;
mod api_stripe;
mod api_token_source;
mod api_webhooks;
mod cli;
mod cluster;
mod conventions;
mod lifecycle;
mod operations;
mod premium;
mod refusals;
mod scrape;
mod session;
mod supervisor;
mod voice;
mod voice_local;
mod web;
