//! Operator commands: migrations, personas, cards, balances, tiers, audit,
//! the usage and ad reports, and `run` and `api`, which wire the OS signals
//! into the [`crate::supervisor`]. Each prints what it did in plain text and
//! exits non-zero on failure with a message naming the operation.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use metering::{cards, Rate, UserId};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::config::Config;
use crate::telemetry::Metrics;

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

pub async fn migrate(config: &Config) -> Result<ExitCode> {
    let pool = config.database.connect().await?;
    metering::MIGRATOR.run(&pool).await.context("applying migrations")?;
    let applied =
        sqlx::query!("SELECT version, description FROM _sqlx_migrations ORDER BY version").fetch_all(&pool).await?;
    for m in applied {
        println!("applied {:04} {}", m.version, m.description);
    }
    Ok(ExitCode::SUCCESS)
}

/// `mindbot-agent run`: the worker supervisor ([`crate::supervisor::run`])
/// with the OS signals wired in: SIGTERM drains (a second SIGTERM ends every
/// session at once), Ctrl-C (SIGINT) ends every session at once.
pub async fn run(config: &Config) -> Result<ExitCode> {
    // Installed when the supervisor first polls them, once it is registered.
    let sigterms = futures_util::stream::unfold(None, |installed: Option<Signal>| async move {
        let mut sigterm = match installed {
            Some(s) => s,
            None => match signal(SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "installing the SIGTERM handler failed");
                    return None;
                }
            },
        };
        sigterm.recv().await.map(|()| ((), Some(sigterm)))
    });
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let metrics = Metrics::global().context("installing the metrics recorder")?;
    crate::supervisor::run(config, metrics, interrupt, sigterms).await?;
    Ok(ExitCode::SUCCESS)
}

/// `mindbot-agent api`: the public API and the operator endpoints alone
/// ([`crate::supervisor::serve_api`]) until SIGTERM or Ctrl-C.
pub async fn api(config: &Config) -> Result<ExitCode> {
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let stop = async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let metrics = Metrics::global().context("installing the metrics recorder")?;
    crate::supervisor::serve_api(config, metrics, stop).await?;
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
                let pool = config.database.connect().await?;
                let slugs: Vec<String> = sqlx::query_scalar!(
                    "SELECT slug FROM custom_personas WHERE COALESCE(is_active, TRUE) ORDER BY slug"
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
    s.parse().map_err(|e: metering::RecordError| anyhow::anyhow!("--user: {e}"))
}

pub async fn card(config: &Config, cmd: CardCommand) -> Result<ExitCode> {
    let pool = config.database.connect().await?;
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
            let id = card.parse().map_err(|e: metering::RecordError| anyhow::anyhow!("card: {e}"))?;
            let c = cards::refund(&pool, id).await.context("refunding card")?;
            println!("refunded {} ({} min)", c.id, c.total_minutes);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn balance(config: &Config, user: &str) -> Result<ExitCode> {
    let pool = config.database.connect().await?;
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
    let pool = config.database.connect().await?;
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
    let pool = config.database.connect().await?;
    let report = metering::audit::audit(&pool).await.context("auditing")?;
    println!("{report}");
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The usage report (`usage --since`); a bad `--since` fails before any query.
pub async fn usage(config: &Config, since: &str) -> Result<ExitCode> {
    let since = crate::usage::report::parse_since(since)?;
    let pool = config.database.connect().await?;
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
    let pool = config.database.connect().await?;
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
}
