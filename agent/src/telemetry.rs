//! Logs and metrics. Logs: `tracing` to stderr as text or JSON lines,
//! filtered by the configured level (or `RUST_LOG`). Metrics: the `metrics`
//! facade recorded by a Prometheus exporter whose text `/metrics` serves.
//! Names follow Prometheus conventions (`mindbot_` prefix, `_total`
//! counters, base units); labels are bounded (persona slug, reason), never a
//! user or session id.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Installs the global log subscriber. Safe to call once per process.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if cfg.format == "json" { builder.json().try_init() } else { builder.try_init() };
}

/// Installs the Prometheus recorder and describes every metric.
pub fn metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("mindbot_meter_tick_duration_seconds".into()),
            &[0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0],
        )?
        .set_buckets_for_metric(
            Matcher::Full("mindbot_hangup_latency_seconds".into()),
            &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0],
        )?
        .install_recorder()?;
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("mindbot_jobs_offered_total", "Availability requests LiveKit sent this worker");
    describe_counter!("mindbot_jobs_accepted_total", "Offered jobs this worker said yes to");
    describe_counter!("mindbot_jobs_declined_total", "Offered jobs this worker said no to, by reason");
    describe_counter!("mindbot_jobs_assigned_total", "Jobs LiveKit assigned to this worker");
    describe_counter!("mindbot_sessions_refused_total", "Jobs refused before any charge, by reason");
    describe_gauge!("mindbot_sessions_active", "Metered sessions running now, by persona");
    describe_counter!("mindbot_sessions_ended_total", "Metered sessions ended, by persona and reason");
    describe_counter!("mindbot_billed_seconds_total", Unit::Seconds, "Whole seconds of metered talk, by persona");
    describe_counter!(
        "mindbot_card_time_charged_seconds_total",
        Unit::Seconds,
        "Card time charged to users, by persona (whole seconds of the exact running total)"
    );
    describe_histogram!("mindbot_hangup_latency_seconds", Unit::Seconds, "Exhaustion to the user gone from the room");
    describe_histogram!("mindbot_meter_tick_duration_seconds", Unit::Seconds, "Duration of one tick batch write");
    describe_counter!("mindbot_meter_write_failures_total", "Tick batch writes that failed and were retried");
    describe_counter!("mindbot_database_errors_total", "Database failures outside tick writes, by stage");
    describe_gauge!("mindbot_livekit_connected", "1 while registered with the LiveKit server");
    describe_gauge!("mindbot_worker_jobs", "Jobs this worker is running");
    describe_gauge!("mindbot_worker_load", "Jobs running as a share of worker.max_jobs");
    Ok(handle)
}

/// Adds a closed session's exact charge to its persona's running total and
/// publishes the total in whole seconds (counters are integers; keeping the
/// milliseconds here means rounding never accumulates across sessions).
pub fn add_charged(persona: &str, charged_ms: u64) {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static TOTALS: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
    let mut totals = TOTALS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    let total = totals.entry(persona.to_string()).or_default();
    *total += charged_ms;
    metrics::counter!("mindbot_card_time_charged_seconds_total", "persona" => persona.to_string())
        .absolute(*total / 1000);
}
