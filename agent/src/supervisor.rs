//! The service's two long-running modes as library functions: [`run`] (the
//! worker supervisor: registers with LiveKit, runs a session per assigned
//! job, serves the operator HTTP and, when enabled, `/v1`) and [`serve_api`]
//! (the API and operator HTTP alone). Neither reads a signal: the caller
//! hands in when to stop (and, for the worker, when to drain), as tokio's
//! mini-redis hands `server::run` its shutdown future, so a test drives them
//! in-process and the binary wires the OS signals (`cli`).
//!
//! On the way out the HTTP server stops accepting and is awaited: requests
//! already in progress are answered before these functions return.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::{Stream, StreamExt};
use livekit_api::access_token::{AccessToken, VideoGrants};
use livekit_api::services::agent_dispatch::AgentDispatchClient;
use livekit_api::services::room::RoomClient;
use mindbot_transport::worker::{JobStatus, TokenFn, Worker, WorkerEvent, WorkerOptions};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{redacted_url, Config};
use crate::jobs::Jobs;
use crate::session;
use crate::telemetry::Metrics;

/// The worker until it is told to stop; returns once every session has
/// ended, the meter has written its last ticks and the HTTP server has
/// answered its last request.
///
/// Each item of `drain` is a drain request: the first stops taking jobs and
/// lets running sessions go on for up to `worker.drain_timeout_seconds`
/// (then they end with reason `shutdown`); the next ends them at once.
/// `shutdown` ends every session at once (reason `shutdown`). Either way the
/// function returns when no session is left.
///
/// `metrics` are what its `/metrics` shows: the process-wide recorder's
/// ([`Metrics::global`]) in the binary, or a recorder of its own that is the
/// default of the threads it runs on ([`Metrics::scoped`]).
pub async fn run(
    config: &Config,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
    drain: impl Stream<Item = ()>,
) -> Result<()> {
    // Series exist (at zero) from the start, so a rate over them is defined.
    crate::telemetry::register(config, true);
    let pool = config.database.connect().await?;
    if config.database.migrate_on_start {
        metering::MIGRATOR.run(&pool).await.context("applying migrations at start")?;
    }
    // Unique per process: a restarted worker's old sessions are orphans to reap.
    let worker_id = format!("mindbot-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let meter = Arc::new(metering::meter::Meter::start(pool.clone(), config.meter_config(&worker_id)));
    let lk = &config.livekit;
    let http_url = mindbot_transport::url::http_base(lk.server_api());
    let ctx = Arc::new(session::Context {
        pool,
        meter: meter.clone(),
        catalog: personas::Catalog::builtin(),
        rules: config.personas.custom_rules(),
        access: config.personas.access_policy(),
        rooms: RoomClient::with_api_key(&http_url, &lk.api_key, lk.api_secret.expose()),
        default_persona: config.personas.default.clone(),
        user_grace: Duration::from_secs(config.worker.user_grace_seconds),
        user_wait: Duration::from_secs(config.worker.user_wait_seconds),
        ready_wait: Duration::from_secs(config.worker.ready_wait_seconds),
        db_wait: Duration::from_secs(config.meter.db_grace_seconds),
        balance_every: Duration::from_secs(config.worker.balance_update_seconds),
        hangup: config.worker.hangup,
        worker_id: worker_id.clone(),
        voice: crate::voice::VoiceService::from_config(&config.voice)?,
        metrics: metrics.clone(),
    });
    let (key, secret) = (lk.api_key.clone(), lk.api_secret.expose().to_string());
    let token: TokenFn = Arc::new(move || {
        AccessToken::with_api_key(&key, &secret)
            .with_grants(VideoGrants { agent: true, ..Default::default() })
            .to_jwt()
            .map_err(|e| e.to_string())
    });
    let registered = Arc::new(AtomicBool::new(false));
    let health = crate::http::Health {
        pool: ctx.pool.clone(),
        registered: registered.clone(),
        needs_worker: true,
        metrics: metrics.handle().clone(),
    };
    let api = api_router(config).await?;
    let http = crate::http::serve(&config.http, health, api, web_router(config)).await?;
    tracing::info!(address = %http.address, metrics_address = ?http.metrics_address, api = config.api.enabled,
        "operator HTTP: /metrics /healthz /readyz");
    let mut options = WorkerOptions::new(&lk.url, &lk.agent_name, token);
    options.max_jobs = config.worker.max_jobs;
    let (worker, mut events) = Worker::connect(options).await.context("registering with the LiveKit server")?;
    let handle = worker.handle();
    registered.store(true, Ordering::Relaxed);
    metrics::gauge!("mindbot_livekit_connected").set(1.0);
    tracing::info!(worker_id, agent_name = %lk.agent_name, "worker registered; waiting for jobs");
    let max_jobs = f64::from(config.worker.max_jobs);
    // Other workers' orphans this worker's meter closes: their users are told.
    let orphans = tokio::spawn(session::tell_orphans(ctx.clone(), meter.reaped()));
    // Rooms whose dispatch no worker took get another (one worker sweeps at a time).
    let sweeping = CancellationToken::new();
    if config.worker.redispatch_seconds > 0 {
        let sweep = crate::redispatch::Redispatch {
            pool: ctx.pool.clone(),
            rooms: RoomClient::with_api_key(&http_url, &lk.api_key, lk.api_secret.expose())
                .with_request_timeout(Duration::from_secs(3)),
            dispatches: AgentDispatchClient::with_api_key(&http_url, &lk.api_key, lk.api_secret.expose())
                .with_request_timeout(Duration::from_secs(3)),
            agent_name: lk.agent_name.clone(),
            every: Duration::from_secs(config.worker.redispatch_seconds),
        };
        tokio::spawn(sweep.run(sweeping.clone()).instrument(tracing::info_span!("redispatch")));
    }

    // Polled only from here on, as the signal handlers were installed before.
    let drain = drain.fuse();
    tokio::pin!(drain);
    tokio::pin!(shutdown);
    let mut shut_down = false;
    let end_now = CancellationToken::new();
    let mut cancels: HashMap<String, CancellationToken> = HashMap::new();
    let mut jobs: Jobs<session::Outcome> = Jobs::new();
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let mut drain_deadline = far;
    let mut draining = false;
    loop {
        metrics::gauge!("mindbot_worker_jobs").set(jobs.len() as f64);
        metrics::gauge!("mindbot_worker_load").set(jobs.len() as f64 / max_jobs);
        if draining && jobs.is_empty() {
            break;
        }
        tokio::select! {
            ev = events.recv() => match ev {
                Some(WorkerEvent::Assigned(a)) => {
                    metrics::counter!("mindbot_jobs_assigned_total").increment(1);
                    let stop = session::Stop { shutdown: end_now.clone(), terminated: CancellationToken::new() };
                    cancels.insert(a.job.id.clone(), stop.terminated.clone());
                    let span = tracing::info_span!("session", room = %a.job.room, job_id = %a.job.id);
                    let ctx = ctx.clone();
                    let id = a.job.id.clone();
                    jobs.spawn(id, session::run(ctx, a, stop).instrument(span));
                }
                Some(WorkerEvent::Terminated { job_id, .. }) => {
                    if let Some(c) = cancels.get(&job_id) {
                        c.cancel();
                    }
                }
                Some(WorkerEvent::Connected { worker_id }) => {
                    registered.store(true, Ordering::Relaxed);
                    metrics::gauge!("mindbot_livekit_connected").set(1.0);
                    tracing::info!(%worker_id, "registered with LiveKit");
                }
                Some(WorkerEvent::Disconnected { reason }) => {
                    registered.store(false, Ordering::Relaxed);
                    metrics::gauge!("mindbot_livekit_connected").set(0.0);
                    tracing::warn!(%reason, "lost LiveKit; reconnecting");
                }
                None => {
                    tracing::error!("the worker connection ended for good; ending sessions");
                    end_now.cancel();
                    draining = true;
                }
            },
            Some((job_id, done)) = jobs.join_next() => {
                cancels.remove(&job_id);
                let status = match done {
                    Err(panicked) => {
                        // Its metered session was closed (status error) when the task dropped it.
                        tracing::error!(%job_id, error = %panicked, "session task failed; slot freed");
                        metrics::counter!("mindbot_session_panics_total").increment(1);
                        JobStatus::Failed(panicked)
                    }
                    Ok(session::Outcome::Failed(e)) => JobStatus::Failed(e),
                    Ok(session::Outcome::Refused(reason)) => JobStatus::Failed(format!("refused: {reason}")),
                    Ok(session::Outcome::Ended(reason)) => {
                        tracing::debug!(%job_id, %reason, "job done");
                        JobStatus::Success
                    }
                };
                let _ = handle.job_status(&job_id, status).await;
            }
            Some(()) = drain.next() => {
                if draining {
                    tracing::info!("second drain request (SIGTERM): ending every session now");
                    end_now.cancel();
                } else {
                    tracing::info!(sessions = jobs.len(), "drain requested (SIGTERM): draining");
                    draining = true;
                    let _ = handle.drain().await;
                    drain_deadline = tokio::time::Instant::now() + Duration::from_secs(config.worker.drain_timeout_seconds);
                }
            }
            () = &mut shutdown, if !shut_down => {
                tracing::info!(sessions = jobs.len(), "shutdown: ending every session now");
                shut_down = true;
                end_now.cancel();
                draining = true;
            }
            _ = tokio::time::sleep_until(drain_deadline), if draining => end_now.cancel(),
        }
    }
    let _ = worker.shutdown().await;
    orphans.abort();
    sweeping.cancel();
    meter.shutdown().await;
    http.shutdown().await;
    tracing::info!("worker stopped");
    Ok(())
}

/// The public API and the operator endpoints alone, without the worker (an
/// API node), until `shutdown`; returns once the last request is answered.
/// `metrics` as for [`run`].
pub async fn serve_api(config: &Config, metrics: Metrics, shutdown: impl Future<Output = ()>) -> Result<()> {
    anyhow::ensure!(config.api.enabled, "config key api.enabled must be true for `mindbot-agent api`");
    crate::telemetry::register(config, false);
    let pool = config.database.connect().await?;
    if config.database.migrate_on_start {
        metering::MIGRATOR.run(&pool).await.context("applying migrations at start")?;
    }
    let health = crate::http::Health {
        pool: pool.clone(),
        registered: Arc::new(AtomicBool::new(false)),
        needs_worker: false,
        metrics: metrics.handle().clone(),
    };
    let http = crate::http::serve(&config.http, health, api_router(config).await?, web_router(config)).await?;
    tracing::info!(address = %http.address, metrics_address = ?http.metrics_address,
        "API serving /v1 and /metrics /healthz /readyz");
    shutdown.await;
    http.shutdown().await;
    tracing::info!("API stopped");
    Ok(())
}

/// The public API's own pool: small, and quick to give up (a 503) when full.
async fn connect_api(config: &Config) -> Result<PgPool> {
    let url = config.database.url.expose();
    PgPoolOptions::new()
        .max_connections(config.api.database_max_connections)
        .acquire_timeout(Duration::from_millis(config.api.database_acquire_timeout_ms))
        .connect(url)
        .await
        .with_context(|| format!("connecting the API's pool to PostgreSQL at {}", redacted_url(url)))
}

/// The `/v1` router, with a pool of its own, when `api.enabled`.
async fn api_router(config: &Config) -> Result<Option<axum::Router>> {
    if !config.api.enabled {
        return Ok(None);
    }
    let pool = connect_api(config).await?;
    let api = crate::api::Api::new(config, pool).context("setting up the public API")?;
    let router =
        crate::api::router(Arc::new(api), config.http.request_timeout()).context("setting up the public API")?;
    Ok(Some(router))
}

/// The web app's files at `/` when `http.web_root` holds a built app and the API is on.
fn web_router(config: &Config) -> Option<axum::Router> {
    if !config.api.enabled {
        if !config.http.web_root.is_empty() {
            tracing::info!("the web app is not served: it needs the API (api.enabled)");
        }
        return None;
    }
    let livekit_url =
        if config.api.public_livekit_url.is_empty() { &config.livekit.url } else { &config.api.public_livekit_url };
    crate::http::web::router(&config.http.web_root, livekit_url)
}
