//! The operator CLI, run as a user runs it: the real binary against a fresh
//! database of its own on the real PostgreSQL.

use std::process::{Command, Output};

use mindbot_tests::url_for;
use sqlx::PgPool;

fn cli(pool: &PgPool, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mindbot-agent"))
        .args(args)
        .env("DATABASE_URL", url_for(pool))
        .env("MINDBOT_LOG_LEVEL", "warn")
        .output()
        .expect("run mindbot-agent")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[sqlx::test(migrations = false)]
async fn migrate_issue_activate_balance_refund_audit(pool: PgPool) {
    let out = ok(&cli(&pool, &["migrate"]));
    assert!(out.contains("0001 seed schema") && out.contains("0002 metering"), "{out}");
    sqlx::query("INSERT INTO pricing_tiers (id, name, hours, price_cents, bonus_minutes, description) VALUES ('starter', 'Starter', 1, 999, 10, 'An hour and ten')")
        .execute(&pool)
        .await
        .unwrap();
    assert!(ok(&cli(&pool, &["tiers"])).contains("starter"));

    let issued = ok(&cli(&pool, &["card", "issue", "--tier", "starter", "--count", "2"]));
    let lines: Vec<&str> = issued.lines().collect();
    assert_eq!(lines.len(), 2, "{issued}");
    let (card_a, code_a) = (lines[0].split_whitespace().next().unwrap(), lines[0].split_whitespace().nth(1).unwrap());
    let card_b = lines[1].split_whitespace().next().unwrap();
    assert!(lines[0].ends_with("70 min"));

    let user: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO users (email, full_name, password_hash) VALUES ('a@b.c', 'A', 'x') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let user = user.to_string();
    let act = ok(&cli(&pool, &["card", "activate", &code_a.to_lowercase(), "--user", &user]));
    assert!(act.contains(card_a), "{act}");
    let bal = ok(&cli(&pool, &["balance", "--user", &user]));
    assert!(bal.contains("spendable: 4200.000s (4200000 ms)"), "{bal}");
    assert!(bal.contains("trivia-host") && bal.contains("8400 s"), "x0.5 buys twice the seconds:\n{bal}");

    // The same code again: a clear error, nothing changes.
    let again = cli(&pool, &["card", "activate", code_a, "--user", &user]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already active"));

    assert!(ok(&cli(&pool, &["card", "refund", card_b])).contains("refunded"));
    let audit = ok(&cli(&pool, &["audit"]));
    assert!(audit.contains("audit passed"), "{audit}");

    // An invariant broken by hand makes the audit fail, naming the card.
    sqlx::query("UPDATE time_cards SET remaining_minutes = remaining_minutes - 1 WHERE id = $1::uuid")
        .bind(card_a)
        .execute(&pool)
        .await
        .unwrap();
    let bad = cli(&pool, &["audit"]);
    assert_eq!(bad.status.code(), Some(1));
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(text.contains("FAIL ledger_matches_cards") && text.contains(card_a), "{text}");
}

#[sqlx::test(migrations = false)]
async fn bad_input_is_a_clear_error_naming_it(pool: PgPool) {
    ok(&cli(&pool, &["migrate"]));
    let out = cli(&pool, &["balance", "--user", "not-a-uuid"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"not-a-uuid\""));
    let out = cli(&pool, &["card", "issue", "--tier", "gold"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"gold\""));
    let out = Command::new(env!("CARGO_BIN_EXE_mindbot-agent"))
        .args(["tiers"])
        .env("DATABASE_URL", "mysql://nope")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("database.url"));
}

#[test]
fn persona_list_and_validate() {
    let out = Command::new(env!("CARGO_BIN_EXE_mindbot-agent")).args(["persona", "list"]).output().unwrap();
    let text = ok(&out);
    assert!(text.lines().count() >= 7, "{text}");
    let catalog = concat!(env!("CARGO_MANIFEST_DIR"), "/../personas/catalog/professor-ada.toml");
    let ok_out =
        Command::new(env!("CARGO_BIN_EXE_mindbot-agent")).args(["persona", "validate", catalog]).output().unwrap();
    assert!(ok_out.status.success());
    let dir = std::env::temp_dir().join(format!("persona-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    let text =
        std::fs::read_to_string(catalog).unwrap().replace("base_cost_multiplier = 1.0", "base_cost_multiplier = -2");
    std::fs::write(&bad, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mindbot-agent"))
        .args(["persona", "validate", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("base_cost_multiplier"));
}

#[sqlx::test(migrations = false)]
async fn demo_funds_a_user_and_prints_a_token_that_dispatches_the_agent(pool: PgPool) {
    ok(&cli(&pool, &["migrate"]));
    let first = ok(&cli(&pool, &["demo"]));
    assert!(first.contains("balance 300.000s"), "{first}");
    // Run again: the same user, not topped up while funded.
    let again = ok(&cli(&pool, &["demo"]));
    assert!(again.contains("balance 300.000s"), "{again}");
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE email = 'demo@mindbot.invalid'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users, 1);
    let token = again.lines().find_map(|l| l.strip_prefix("token:")).unwrap().trim();
    let claims = livekit_api::access_token::TokenVerifier::with_api_key("devkey", "secret").verify(token).unwrap();
    let dispatch = &claims.room_config.expect("room configuration").agents[0];
    assert_eq!(dispatch.agent_name, "mindbot");
    let meta: serde_json::Value = serde_json::from_str(&dispatch.metadata).unwrap();
    assert_eq!(meta["persona"], "professor-ada");
    assert!(meta["user_id"].as_str().unwrap().parse::<uuid::Uuid>().is_ok());
}

/// Runs `mindbot-agent <command>` with `env`; its exit code and stderr.
fn refused(command: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mindbot-agent"))
        .arg(command)
        .env("MINDBOT_LOG_LEVEL", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run mindbot-agent");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn the_dev_livekit_key_or_secret_is_refused_for_a_server_that_is_not_this_machine() {
    let (code, err) = refused("run", &[("LIVEKIT_URL", "wss://livekit.example.com")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("livekit.api_key") && err.contains("not a loopback address"), "{err}");
    let (code, err) = refused(
        "run",
        &[
            ("LIVEKIT_URL", "ws://10.20.30.40:7880"),
            ("LIVEKIT_API_KEY", "APIprodkey"),
            ("LIVEKIT_API_SECRET", "secret"),
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("livekit.api_secret") && err.contains("not a loopback address"), "{err}");
    let api = [
        ("LIVEKIT_URL", "https://livekit.example.com"),
        ("MINDBOT_API_ENABLED", "true"),
        ("MINDBOT_API_JWT_KEY", "an-hs256-key-of-more-than-32-bytes"),
        ("MINDBOT_API_JWT_ISSUER", "i"),
        ("MINDBOT_API_JWT_AUDIENCE", "a"),
    ];
    let (code, err) = refused("api", &api);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("livekit.api_key"), "{err}");
}

#[test]
fn an_hs256_jwt_key_under_32_bytes_is_refused_naming_the_key() {
    let (code, err) = refused(
        "api",
        &[
            ("MINDBOT_API_ENABLED", "true"),
            ("MINDBOT_API_JWT_KEY", "short-shared-secret"),
            ("MINDBOT_API_JWT_ISSUER", "i"),
            ("MINDBOT_API_JWT_AUDIENCE", "a"),
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("api.jwt_key") && err.contains("at least 32 bytes"), "{err}");
    assert!(!err.contains("short-shared-secret"), "the key is never printed: {err}");
}

#[test]
fn metrics_open_to_the_network_are_refused_without_their_own_address_or_a_token() {
    let (code, err) = refused("run", &[("MINDBOT_HTTP_ADDRESS", "0.0.0.0:9464")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("http.metrics_address") && err.contains("http.metrics_token"), "{err}");
}
