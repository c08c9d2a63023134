//! `mindbot-agent`: the MindBot LiveKit agent worker and its operator CLI.
//! The command line only; everything it runs is in the library (`lib.rs`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mindbot_agent::{api, bench, cli, config, demo, telemetry};

/// The MindBot agent worker and operator tools.
#[derive(Parser)]
#[command(name = "mindbot-agent", version, about)]
struct Args {
    /// Configuration file (default: the built-in defaults, i.e. config.toml).
    #[arg(long, short, global = true, env = "MINDBOT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker: register with LiveKit, take jobs, meter every session.
    Run,
    /// Serve the public API (/v1) and the operator endpoints, without the worker.
    Api,
    /// Apply pending database migrations.
    Migrate,
    /// A funded demo user and a token that dispatches the agent to a new room.
    Demo,
    /// Built-in and custom personas.
    #[command(subcommand)]
    Persona(cli::PersonaCommand),
    /// Time cards: issue, activate, refund.
    #[command(subcommand)]
    Card(cli::CardCommand),
    /// A user's cards, exact balance and seconds affordable per persona.
    Balance {
        #[arg(long)]
        user: String,
    },
    /// Active pricing tiers.
    Tiers,
    /// Check the money invariants over the whole database; non-zero exit on any mismatch.
    Audit,
    /// Per persona and session since a date: billed time and revenue against
    /// provider usage and its cost at `[voice.prices]`.
    Usage {
        /// A date (YYYY-MM-DD, UTC) or an RFC 3339 time; sessions started then or later.
        #[arg(long)]
        since: String,
    },
    /// Rewarded ads per persona since a date: views, completions, earned and spent seconds, revenue.
    Ads {
        /// A day (YYYY-MM-DD, from its midnight in personas.timezone) or an RFC 3339 instant.
        #[arg(long)]
        since: String,
    },
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match config::Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config.log);
    // Before any token is signed: jsonwebtoken's crypto provider is process-wide.
    api::auth::install_crypto();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match args.command {
            Command::Run => cli::run(&config).await,
            Command::Api => cli::api(&config).await,
            Command::Migrate => cli::migrate(&config).await,
            Command::Demo => demo::demo(&config).await,
            Command::Persona(c) => cli::persona(&config, c).await,
            Command::Card(c) => cli::card(&config, c).await,
            Command::Balance { user } => cli::balance(&config, &user).await,
            Command::Tiers => cli::tiers(&config).await,
            Command::Audit => cli::audit(&config).await,
            Command::Usage { since } => cli::usage(&config, &since).await,
            Command::Ads { since } => cli::ads(&config, &since).await,
            Command::Bench(b) => bench::run(&config, b).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
