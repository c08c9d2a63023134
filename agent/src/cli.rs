//! Operator commands: migrations, personas, cards, balances, tiers, audit,
//! the usage and ad reports, and `run`. Each prints what it did in plain text and exits non-zero on
//! failure with a message naming the operation.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;
use livekit_api::access_token::{AccessToken, VideoGrants};
use livekit_api::services::room::RoomClient;
use metering::{cards, Rate, UserId};
use mindbot_transport::worker::{JobStatus, TokenFn, Worker, WorkerEvent, WorkerOptions};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Config;
use crate::jobs::Jobs;
use crate::session;

#[derive(Subcommand)]
pub enum PersonaCommand {
    /// List the built-in personas (and active custom ones with --custom).
    List {
        #[arg(long)]
        custom: bool,
    },
    /// Validate persona files (TOML or JSON); non-zero exit if any is invalid.
    Validate {
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum CardCommand {
    /// Issue pending cards from a pricing tier; prints their codes.
    Issue {
        #[arg(long)]
        tier: String,
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// Activate a card code for a user.
    Activate {
        code: String,
        #[arg(long)]
        user: String,
    },
    /// Refund an unused card.
    Refund { card: String },
}

/// The database URL with its password removed, for messages.
pub fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}@{}", &url[..s + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
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

pub async fn connect(config: &Config) -> Result<PgPool> {
    let url = config.database.url.expose();
    PgPoolOptions::new()
        .max_connections(config.database.max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", redacted_url(url)))
}

pub async fn migrate(config: &Config) -> Result<ExitCode> {
    let pool = connect(config).await?;
    metering::MIGRATOR.run(&pool).await.context("applying migrations")?;
    let applied: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, description FROM _sqlx_migrations ORDER BY version").fetch_all(&pool).await?;
    for (v, d) in applied {
        println!("applied {v:04} {d}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The worker: registers with LiveKit, runs a session per assigned job, and
/// drains on SIGTERM (a second SIGTERM ends every session at once).
pub async fn run(config: &Config) -> Result<ExitCode> {
    let prometheus = crate::telemetry::metrics().context("installing the metrics recorder")?;
    // Series exist (at zero) from the start, so a rate over them is defined.
    crate::telemetry::zero_series(config, true);
    let pool = connect(config).await?;
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
        balance_every: Duration::from_secs(config.worker.balance_update_seconds),
        hangup: config.worker.hangup,
        worker_id: worker_id.clone(),
        voice: crate::voice::VoiceService::from_config(&config.voice)?,
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
        metrics: prometheus,
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

    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let shutdown = CancellationToken::new();
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
                    let stop = session::Stop { shutdown: shutdown.clone(), terminated: CancellationToken::new() };
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
                    shutdown.cancel();
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
            _ = sigterm.recv() => {
                if draining {
                    tracing::info!("second SIGTERM: ending every session now");
                    shutdown.cancel();
                } else {
                    tracing::info!(sessions = jobs.len(), "SIGTERM: draining");
                    draining = true;
                    let _ = handle.drain().await;
                    drain_deadline = tokio::time::Instant::now() + Duration::from_secs(config.worker.drain_timeout_seconds);
                }
            }
            _ = tokio::signal::ctrl_c() => shutdown.cancel(),
            _ = tokio::time::sleep_until(drain_deadline), if draining => shutdown.cancel(),
        }
    }
    let _ = worker.shutdown().await;
    meter.shutdown().await;
    http.shutdown().await;
    tracing::info!("worker stopped");
    Ok(ExitCode::SUCCESS)
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

/// The public API and the operator endpoints alone, without the worker (an
/// API node): serves until SIGTERM or Ctrl-C.
pub async fn api(config: &Config) -> Result<ExitCode> {
    anyhow::ensure!(config.api.enabled, "config key api.enabled must be true for `mindbot-agent api`");
    let prometheus = crate::telemetry::metrics().context("installing the metrics recorder")?;
    crate::telemetry::zero_series(config, false);
    let pool = connect(config).await?;
    if config.database.migrate_on_start {
        metering::MIGRATOR.run(&pool).await.context("applying migrations at start")?;
    }
    let health = crate::http::Health {
        pool: pool.clone(),
        registered: Arc::new(AtomicBool::new(false)),
        needs_worker: false,
        metrics: prometheus,
    };
    let http = crate::http::serve(&config.http, health, api_router(config).await?, web_router(config)).await?;
    tracing::info!(address = %http.address, metrics_address = ?http.metrics_address,
        "API serving /v1 and /metrics /healthz /readyz");
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = sigterm.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    http.shutdown().await;
    tracing::info!("API stopped");
    Ok(ExitCode::SUCCESS)
}

pub async fn persona(config: &Config, cmd: PersonaCommand) -> Result<ExitCode> {
    match cmd {
        PersonaCommand::List { custom } => {
            let catalog = personas::Catalog::builtin();
            println!(
                "{:<20} {:<26} {:>10} {:<8} {:>5} {:>9} {:>9}  source",
                "slug", "name", "multiplier", "access", "age", "session", "daily"
            );
            let mut rows: Vec<personas::PersonaConfig> = catalog.all().to_vec();
            let mut sources = vec!["built-in"; rows.len()];
            if custom {
                let pool = connect(config).await?;
                let slugs: Vec<String> = sqlx::query_scalar(
                    "SELECT slug FROM custom_personas WHERE COALESCE(is_active, TRUE) ORDER BY slug",
                )
                .fetch_all(&pool)
                .await?;
                for slug in slugs {
                    match personas::resolve(&pool, &catalog, &slug).await {
                        Ok(r) => {
                            rows.push(r.config);
                            sources.push("custom");
                        }
                        Err(e) => eprintln!("custom persona {slug}: {e}"),
                    }
                }
            }
            let opt = |v: Option<i32>, unit: &str| v.map_or("-".to_string(), |v| format!("{v}{unit}"));
            for (p, src) in rows.iter().zip(sources) {
                println!(
                    "{:<20} {:<26} {:>10} {:<8} {:>5} {:>9} {:>9}  {src}",
                    p.slug,
                    p.name,
                    p.base_cost_multiplier.decimal_text(),
                    format!("{:?}", p.access_level).to_lowercase(),
                    opt(p.age_restriction, "+"),
                    opt(p.session_time_limit, "m"),
                    opt(p.daily_usage_limit, "m"),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        PersonaCommand::Validate { files } => {
            let mut bad = 0;
            for f in &files {
                match personas::parse_persona_file(f) {
                    Ok(p) => println!("ok      {} ({})", f.display(), p.slug),
                    Err(e) => {
                        bad += 1;
                        println!("invalid {e}");
                    }
                }
            }
            Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

fn parse_user(s: &str) -> Result<UserId> {
    s.parse().map_err(|e: metering::Error| anyhow::anyhow!("--user: {e}"))
}

pub async fn card(config: &Config, cmd: CardCommand) -> Result<ExitCode> {
    let pool = connect(config).await?;
    match cmd {
        CardCommand::Issue { tier, count } => {
            anyhow::ensure!((1..=10_000).contains(&count), "--count must be between 1 and 10000 (got {count})");
            let issued = cards::issue(&pool, &tier, count, None, None).await.context("issuing cards")?;
            for c in issued {
                println!("{}  {}  {} min", c.id, c.activation_code, c.total_minutes);
            }
        }
        CardCommand::Activate { code, user } => {
            let user = parse_user(&user)?;
            let c =
                cards::activate(&pool, &code, user, &config.activation_policy()).await.context("activating card")?;
            let expires = c.expires_at.map_or("never".to_string(), |e| e.to_rfc3339());
            println!("activated {} for {}: {} min, expires {expires}", c.id, c.user_id, c.total_minutes);
        }
        CardCommand::Refund { card } => {
            let id = card.parse().map_err(|e: metering::Error| anyhow::anyhow!("card: {e}"))?;
            let c = cards::refund(&pool, id).await.context("refunding card")?;
            println!("refunded {} ({} min)", c.id, c.total_minutes);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn balance(config: &Config, user: &str) -> Result<ExitCode> {
    let pool = connect(config).await?;
    let user = parse_user(user)?;
    let b = metering::balance::balance(&pool, user).await.context("reading balance")?;
    println!("user {user}");
    println!("{:<36}  {:<9} {:>14} {:>7}  expires", "card", "status", "balance", "total");
    for c in &b.cards {
        let exp = c.expires_at.map_or("never".to_string(), |e| e.to_rfc3339());
        println!("{:<36}  {:<9} {:>14} {:>5}m  {exp}", c.id, c.status, c.balance().to_string(), c.total_minutes);
    }
    println!("spendable: {} ({} ms)", b.spendable, b.spendable.0);
    println!("of which earned (rewarded ads, ad-supported personas only): {} ms", b.funds.earned.0);
    let catalog = personas::Catalog::builtin();
    let mut rates: Vec<(String, Rate, bool)> =
        catalog.all().iter().map(|p| (p.slug.clone(), p.base_cost_multiplier, p.ad_supported)).collect();
    rates.sort_by_key(|(_, r, _)| *r);
    for (slug, rate, ads) in rates {
        println!("  {:<20} x{:<6} {:>8} s", slug, rate.decimal_text(), b.seconds_for(rate, ads));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn tiers(config: &Config) -> Result<ExitCode> {
    let pool = connect(config).await?;
    println!("{:<16} {:<20} {:>5} {:>6} {:>9} {:>8}  description", "id", "name", "hours", "bonus", "minutes", "price");
    for t in cards::tiers(&pool).await.context("listing tiers")? {
        let minutes = t.card_minutes().map_or("invalid".to_string(), |m| m.to_string());
        let price = format!("{}.{:02}", t.price_cents / 100, t.price_cents % 100);
        println!(
            "{:<16} {:<20} {:>5} {:>6} {:>9} {:>8}  {}",
            t.id, t.name, t.hours, t.bonus_minutes, minutes, price, t.description
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn audit(config: &Config) -> Result<ExitCode> {
    let pool = connect(config).await?;
    let report = metering::audit::audit(&pool).await.context("auditing")?;
    println!("{report}");
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The usage report (`usage --since`); a bad `--since` fails before any query.
pub async fn usage(config: &Config, since: &str) -> Result<ExitCode> {
    let since = crate::usage::report::parse_since(since)?;
    let pool = connect(config).await?;
    let text = crate::usage::report::report(&pool, since, &config.voice.prices, &config.api.stripe_currency)
        .await
        .context("reading sessions and provider usage")?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// `--since`: a day (its midnight in `tz`) or an RFC 3339 instant.
fn parse_since(since: &str, tz: chrono_tz::Tz) -> Result<chrono::DateTime<chrono::Utc>> {
    use chrono::TimeZone;
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(since) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let day = chrono::NaiveDate::parse_from_str(since, "%Y-%m-%d")
        .with_context(|| format!("--since {since:?} is neither a day (YYYY-MM-DD) nor an RFC 3339 instant"))?;
    let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists");
    (0..=96)
        .find_map(|q| tz.from_local_datetime(&(midnight + chrono::Duration::minutes(15 * q))).earliest())
        .map(|t| t.with_timezone(&chrono::Utc))
        .with_context(|| format!("--since {since:?}: the day has no start in {tz}"))
}

pub async fn ads(config: &Config, since: &str) -> Result<ExitCode> {
    let since = parse_since(since, config.personas.timezone)?;
    let pool = connect(config).await?;
    let lines = metering::rewards::report(&pool, since).await.context("reading the ad report")?;
    println!("ads since {}", since.to_rfc3339());
    println!(
        "{:<24} {:>8} {:>6} {:>11} {:>14} {:>13} {:>14}",
        "persona", "reported", "views", "completions", "earned_seconds", "spent_seconds", "revenue"
    );
    for l in &lines {
        println!(
            "{:<24} {:>8} {:>6} {:>11} {:>14} {:>13} {:>14}",
            l.persona, l.reported, l.views, l.completions, l.earned_seconds, l.spent_seconds, l.revenue
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn since_is_a_local_midnight_or_an_instant() {
        let tz: chrono_tz::Tz = "Europe/Paris".parse().unwrap();
        assert_eq!(super::parse_since("2026-07-01", tz).unwrap().to_rfc3339(), "2026-06-30T22:00:00+00:00");
        assert_eq!(super::parse_since("2026-07-01T05:00:00Z", tz).unwrap().to_rfc3339(), "2026-07-01T05:00:00+00:00");
        assert!(super::parse_since("yesterday", tz).is_err());
    }

    #[test]
    fn database_password_is_redacted() {
        assert_eq!(super::redacted_url("postgres://me:pw@h:5432/db"), "postgres://me@h:5432/db");
        assert_eq!(super::redacted_url("postgres://h/db"), "postgres://h/db");
    }
}
