//! Logs and metrics. Logs: `tracing` to stderr as text or JSON lines,
//! filtered by the configured level (or `RUST_LOG`). Metrics: the `metrics`
//! facade recorded by a Prometheus exporter whose text `/metrics` serves.
//! Names follow Prometheus conventions (`mindbot_` prefix, `_total`
//! counters, base units); labels are bounded (persona slug, reason), never a
//! user or session id.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogConfig, LogFormat};

/// Installs the global log subscriber. Safe to call once per process.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    // Colour only for a person at a terminal: a file, a pipe or journald
    // would keep the escape codes as noise. NO_COLOR (no-color.org) turns it off.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match cfg.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// One service instance's metrics: the handle `/metrics` renders, and the
/// exact running totals some counters are published from. The binary has
/// one, on the process-wide recorder ([`Metrics::global`]); a test or an
/// embedder running several supervisors in one process gives each its own
/// recorder ([`Metrics::scoped`]), so that one's `/metrics` never shows
/// another's sessions.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    /// Card time charged per persona, in milliseconds (see [`Metrics::add_charged`]).
    charged: Arc<Mutex<HashMap<String, u64>>>,
}

impl Metrics {
    /// Installs the Prometheus recorder as the process-wide one, once per
    /// process: a later call gets the same metrics.
    pub fn global() -> anyhow::Result<Metrics> {
        static INSTALLED: Mutex<Option<Metrics>> = Mutex::new(None);
        let mut installed = INSTALLED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(metrics) = installed.as_ref() {
            return Ok(metrics.clone());
        }
        let recorder = recorder()?;
        let metrics = Metrics::of(&recorder);
        metrics::set_global_recorder(recorder)?;
        *installed = Some(metrics.clone());
        Ok(metrics)
    }

    /// A recorder of its own, not installed anywhere: the caller makes it
    /// the default of every thread the service runs on
    /// (`metrics::set_default_local_recorder`, e.g. from a tokio runtime's
    /// `on_thread_start`), and hands these metrics to the supervisor.
    pub fn scoped() -> anyhow::Result<(Metrics, PrometheusRecorder)> {
        let recorder = recorder()?;
        Ok((Metrics::of(&recorder), recorder))
    }

    fn of(recorder: &PrometheusRecorder) -> Metrics {
        Metrics { handle: recorder.handle(), charged: Arc::default() }
    }

    /// What `/metrics` renders.
    pub fn handle(&self) -> &PrometheusHandle {
        &self.handle
    }

    /// Adds a closed session's exact charge to its persona's running total
    /// and publishes the total in whole seconds (counters are integers;
    /// keeping the milliseconds here means rounding never accumulates across
    /// sessions).
    pub fn add_charged(&self, persona: &str, charged_ms: u64) {
        let mut totals = self.charged.lock().unwrap_or_else(|p| p.into_inner());
        let total = totals.entry(persona.to_string()).or_default();
        *total += charged_ms;
        metrics::counter!("mindbot_card_time_charged_seconds_total", "persona" => persona.to_string())
            .absolute(*total / 1000);
    }
}

/// The Prometheus recorder with the project's histogram buckets.
fn recorder() -> anyhow::Result<PrometheusRecorder> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("mindbot_meter_tick_duration_seconds".into()),
            &[0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0],
        )?
        .set_buckets_for_metric(
            Matcher::Full("mindbot_session_ready_seconds".into()),
            &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0],
        )?
        .set_buckets_for_metric(
            Matcher::Full("mindbot_hangup_latency_seconds".into()),
            &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0],
        )?
        // A histogram rather than the exporter's default summary, so that
        // dashboards can aggregate the turn latency across workers.
        .set_buckets_for_metric(
            Matcher::Full("mindbot_voice_response_seconds".into()),
            &[0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0],
        )?
        .build_recorder();
    Ok(recorder)
}

/// Describes every metric (help text and unit) to the current recorder.
fn describe() {
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
    describe_histogram!(
        "mindbot_session_ready_seconds",
        Unit::Seconds,
        "The user's media connected to their client acknowledging the readiness probe (the session starts)"
    );
    describe_counter!(
        "mindbot_session_ready_timeouts_total",
        "Sessions started without the user's client acknowledging the readiness probe (worker.ready_wait_seconds)"
    );
    describe_histogram!("mindbot_meter_tick_duration_seconds", Unit::Seconds, "Duration of one tick batch write");
    describe_counter!("mindbot_meter_write_failures_total", "Tick batch writes that failed and were retried");
    describe_counter!("mindbot_database_errors_total", "Database failures outside tick writes, by stage");
    describe_counter!(
        "mindbot_sessions_orphaned_total",
        "Sessions of dead workers this worker closed from their heartbeat"
    );
    describe_counter!(
        "mindbot_late_leaves_total",
        "User leaves that came after the user's audio had stopped; the pause was back-dated to the audio"
    );
    describe_counter!(
        "mindbot_room_join_retries_total",
        "Joins of a job's room tried again after the server or the path to it failed"
    );
    describe_counter!(
        "mindbot_redispatches_total",
        "Rooms dispatched again because no worker had taken their job (worker.redispatch_seconds)"
    );
    describe_counter!(
        "mindbot_webhook_signature_failures_total",
        "Webhooks refused because their signature was missing or wrong, by source"
    );
    describe_gauge!("mindbot_livekit_connected", "1 while registered with the LiveKit server");
    describe_gauge!("mindbot_worker_jobs", "Jobs this worker is running");
    describe_gauge!("mindbot_worker_load", "Jobs running as a share of worker.max_jobs");
}

/// Describes every metric to the current recorder and registers at zero the
/// series whose labels are known before any event, so that
/// they are in the first scrape and `rate()` / `increase()` see their first
/// event (a series that appears at 1 looks like no change). Series labelled
/// by persona appear with the first session; `worker` is false for an API
/// node (`mindbot-agent api`).
pub fn register(config: &Config, worker: bool) {
    use metrics::{counter, histogram};
    describe();
    if worker {
        for name in ["mindbot_jobs_offered_total", "mindbot_jobs_accepted_total", "mindbot_jobs_assigned_total"] {
            counter!(name).increment(0);
        }
        for reason in ["draining", "at_capacity", "loaded", "duplicate"] {
            counter!("mindbot_jobs_declined_total", "reason" => reason).increment(0);
        }
        for stage in ["admit", "open", "close", "usage"] {
            counter!("mindbot_database_errors_total", "stage" => stage).increment(0);
        }
        counter!("mindbot_meter_write_failures_total").increment(0);
        counter!("mindbot_sessions_orphaned_total").increment(0);
        counter!("mindbot_late_leaves_total").increment(0);
        counter!("mindbot_redispatches_total").increment(0);
        counter!("mindbot_room_join_retries_total").increment(0);
        counter!("mindbot_session_ready_timeouts_total").increment(0);
        // Not registered until LiveKit answers the registration.
        metrics::gauge!("mindbot_livekit_connected").set(0.0);
        // Registered without a sample: the buckets are exported at zero.
        let _ = histogram!("mindbot_meter_tick_duration_seconds");
        let _ = histogram!("mindbot_hangup_latency_seconds");
        let _ = histogram!("mindbot_session_ready_seconds");
        let v = &config.voice;
        if v.enabled {
            let stages = [("stt", &v.stt.provider), ("llm", &v.llm.provider)];
            let tts = v.tts.keys().map(|profile| ("tts", profile));
            for (stage, provider) in stages.into_iter().chain(tts) {
                counter!("mindbot_voice_errors_total", "stage" => stage, "provider" => provider.clone()).increment(0);
            }
            let _ = histogram!("mindbot_voice_response_seconds");
        }
    }
    if config.api.enabled {
        for source in ["stripe", "livekit"] {
            counter!("mindbot_webhook_signature_failures_total", "source" => source).increment(0);
        }
    }
}
