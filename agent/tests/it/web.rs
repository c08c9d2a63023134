//! The web app as a person uses it. First the serving: `mindbot-agent`
//! serves the built app at `/` with its headers beside `/v1`, and the local
//! demo's dev sign-in exists only when `api.dev_login` is on. Then a real
//! browser (Debian's Chromium driven by playwright-core, `web/tests/browser.mjs`)
//! against the real worker with its voice on the test speech services, the
//! real LiveKit server and PostgreSQL: a fake microphone plays an espeak-ng
//! question padded with silence.

use crate::api_support;
use crate::e2e;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::api_support::{hs256, request, stripe_signature, ApiServer, AUDIENCE, ISSUER, JWT_SECRET};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// A built app in a temporary directory: an index page and one hashed asset.
fn site() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mindbot-web-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><title>MindBot</title><div id=root></div>").unwrap();
    std::fs::write(dir.join("assets/index-abc123.js"), "console.log('mindbot')").unwrap();
    dir
}

fn header<'a>(reply: &'a api_support::Reply, name: &str) -> &'a str {
    reply.header(name).unwrap_or_else(|| panic!("no {name} header: {:?}", reply.headers))
}

#[sqlx::test(migrations = "../migrations")]
async fn the_app_is_served_at_the_root_with_its_headers_beside_the_api(pool: PgPool) {
    let dir = site();
    let root = dir.to_str().unwrap();
    let api = ApiServer::start(&pool, &[("MINDBOT_HTTP_WEB_ROOT", root)]).await;

    let page = request(api.port, "GET", "/", &[], None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<title>MindBot</title>"));
    assert!(header(&page, "content-type").starts_with("text/html"));
    assert_eq!(header(&page, "cache-control"), "no-cache");
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    let csp = header(&page, "content-security-policy");
    assert!(csp.contains("default-src 'self'") && csp.contains("ws://127.0.0.1:7880"), "{csp}");

    let asset = request(api.port, "GET", "/assets/index-abc123.js", &[], None).await;
    assert_eq!(asset.status, 200);
    assert!(header(&asset, "content-type").contains("javascript"), "{:?}", asset.headers);
    assert_eq!(header(&asset, "cache-control"), "public, max-age=31536000, immutable");

    // A client-side route is the page; a missing file is not.
    let route = request(api.port, "GET", "/history", &[], None).await;
    assert_eq!(route.status, 200);
    assert!(route.body.contains("<title>MindBot</title>"));
    assert_eq!(request(api.port, "GET", "/assets/missing-1.js", &[], None).await.status, 404);

    // The API keeps its own JSON 404s and its routes; the operator endpoints stay.
    request(api.port, "GET", "/v1/no-such-thing", &[], None).await.error(404, "not_found");
    assert_eq!(api.get("/v1/personas", None).await.status, 401);
    assert_eq!(request(api.port, "GET", "/healthz", &[], None).await.body, "ok\n");
    // Dev sign-in is off by default: the API's 404.
    request(api.port, "POST", "/v1/dev/login", &[], None).await.error(404, "not_found");
    std::fs::remove_dir_all(dir).unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn a_missing_web_root_is_logged_and_the_api_still_serves(pool: PgPool) {
    let api = ApiServer::start(&pool, &[("MINDBOT_HTTP_WEB_ROOT", "/nonexistent/web/dist")]).await;
    assert_eq!(request(api.port, "GET", "/", &[], None).await.status, 404);
    assert_eq!(api.get("/v1/personas", None).await.status, 401);
}

#[sqlx::test(migrations = "../migrations")]
async fn dev_sign_in_gives_the_demo_user_a_working_token_and_a_card_once(pool: PgPool) {
    let api = ApiServer::start(&pool, &[("MINDBOT_API_DEV_LOGIN", "true")]).await;
    assert_eq!(api.get("/v1/dev/login", None).await.json(), json!({"enabled": true}));
    let first = api.post("/v1/dev/login", None, &json!({})).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let token = first.json()["token"].as_str().unwrap().to_string();
    let balance = api.get("/v1/me/balance", Some(&token)).await;
    assert_eq!(balance.status, 200, "{}", balance.body);
    assert_eq!(balance.json()["balance_ms"], 300_000, "the demo user's five-minute card");
    // Signing in again while funded gives no second card, and it is the same user.
    let again = api.post("/v1/dev/login", None, &json!({})).await.json();
    assert_eq!(again["user_id"], first.json()["user_id"]);
    assert_eq!(api.get("/v1/me/balance", Some(&token)).await.json()["balance_ms"], 300_000);
    let audit = std::process::Command::new(env!("CARGO_BIN_EXE_mindbot-agent"))
        .arg("audit")
        .env("DATABASE_URL", api_support::url_for(&pool))
        .output()
        .unwrap();
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stdout));
}

/// Chromium's path (`scripts/web.sh browser`), after building the app.
fn built_app_and_browser() -> String {
    e2e::ensure("scripts/web.sh", Some("build"));
    let out =
        std::process::Command::new("bash").arg(e2e::root().join("scripts/web.sh")).arg("browser").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs a `web/tests/` script with `env`; its JSON report, asserted ok.
async fn browser_script(script: &str, env: &[(&str, &str)]) -> Value {
    let run = tokio::process::Command::new("node")
        .arg(e2e::root().join("web/tests").join(script))
        .current_dir(e2e::root().join("web"))
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .await
        .unwrap();
    let report: Value = serde_json::from_slice(&run.stdout)
        .unwrap_or_else(|e| panic!("{script} report: {e}: {}", String::from_utf8_lossy(&run.stdout)));
    eprintln!("{script} report: {report:#}");
    assert!(run.status.success() && report["ok"] == true, "{script} failed: {}", report["error"]);
    report
}

const AD_SECRET: &str = "web-ad-callback-secret";

#[sqlx::test(migrations = "../migrations")]
async fn the_demo_user_signs_in_picks_a_persona_by_keyboard_and_sees_earned_and_paid_time_on_the_ad_supported_one(
    pool: PgPool,
) {
    e2e::ensure("scripts/livekit-server.sh", Some("start"));
    let chromium = built_app_and_browser();
    // The worker (voice off: the call screen's balance is what is looked at)
    // serving the API and the app.
    let web_root = e2e::root().join("web/dist");
    let agent_name = format!("mindbot-web-ads-{}", Uuid::new_v4().simple());
    let mut env = api_support::api_env();
    env.extend([
        ("MINDBOT_API_DEV_LOGIN", "true"),
        ("MINDBOT_HTTP_WEB_ROOT", web_root.to_str().unwrap()),
        ("MINDBOT_ADS_CALLBACK_SECRET", AD_SECRET),
        ("MINDBOT_ADS_REWARD_SECONDS", "60"),
    ]);
    let (_worker, port) = e2e::worker(&pool, &agent_name, &env).await;
    let api = ApiServer::at(port);
    // The demo user (its five-minute card comes with the first sign-in)
    // watches a rewarded ad the ad server vouches for: 60 s earned.
    let demo = api.post("/v1/dev/login", None, &json!({})).await;
    assert_eq!(demo.status, 200, "{}", demo.body);
    let body = json!({"user_id": demo.json()["user_id"], "ad_view_id": "web-view-1", "ad_id": "ad-7",
        "ad_type": "rewarded_video", "persona": "trivia-host", "completed": true, "view_duration": 30,
        "revenue": "0.0125", "timestamp": chrono::Utc::now().timestamp()})
    .to_string();
    let sig = stripe_signature(AD_SECRET, chrono::Utc::now().timestamp(), &body);
    let headers = [("Content-Type", "application/json"), ("X-Mindbot-Ad-Signature", sig.as_str())];
    let reward = request(api.port, "POST", "/v1/webhooks/ads", &headers, Some(body.as_bytes())).await;
    assert_eq!((reward.status, reward.json()["rewarded_seconds"].as_i64()), (200, Some(60)), "{}", reward.body);
    let out_dir = artifacts();
    std::fs::create_dir_all(&out_dir).unwrap();
    let base = format!("http://127.0.0.1:{}/", api.port);
    browser_script(
        "dev-sign-in.mjs",
        &[("BASE_URL", &base), ("CHROMIUM", &chromium), ("ARTIFACTS", out_dir.to_str().unwrap())],
    )
    .await;
}

#[test]
fn dev_sign_in_on_a_public_address_refuses_to_start_naming_the_keys() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mindbot-agent"))
        .arg("api")
        .env("MINDBOT_HTTP_ADDRESS", "0.0.0.0:0")
        .env("MINDBOT_HTTP_METRICS_TOKEN", "a-metrics-token")
        .env("MINDBOT_API_DEV_LOGIN", "true")
        .envs(api_support::api_env())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("api.dev_login") && err.contains("http.address") && err.contains("loopback"), "{err}");
}

/// An app JWT for `user`, expiring `exp_in` seconds from now (negative: expired).
fn app_token(user: Uuid, age: u32, exp_in: i64) -> String {
    api_support::crypto();
    let now = chrono::Utc::now().timestamp();
    hs256(&json!({"sub": user, "iss": ISSUER, "aud": AUDIENCE, "exp": now + exp_in, "age": age}), JWT_SECRET)
}

async fn new_user(pool: &PgPool) -> Uuid {
    api_support::user(pool).await
}

/// A basic-plan subscription (the x1.5 persona needs basic).
async fn subscribe_basic(pool: &PgPool, user: Uuid) {
    mindbot_tests::db::subscribe(pool, user, "basic_monthly").await;
}

/// `question` spoken by espeak-ng between `before` and `after` seconds of
/// silence, as a 16-bit mono WAV at `path`.
fn padded_question(path: &Path, question: &str, before: u32, after: u32) {
    let raw = path.with_extension("raw.wav");
    let ok = std::process::Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "140", "-w"])
        .arg(&raw)
        .arg(question)
        .status();
    assert!(ok.unwrap().success(), "espeak-ng failed");
    let bytes = std::fs::read(&raw).unwrap();
    let rate = u32::from_le_bytes(bytes[24..28].try_into().unwrap());
    let data = bytes.windows(4).position(|w| w == b"data").expect("a data chunk") + 8;
    let silence = |s: u32| vec![0u8; (s * rate * 2) as usize];
    let pcm = [silence(before), bytes[data..].to_vec(), silence(after)].concat();
    let mut wav = Vec::with_capacity(44 + pcm.len());
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + pcm.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
    wav.extend_from_slice(&pcm);
    std::fs::write(path, wav).unwrap();
}

/// Where the browser test keeps its screenshots: `target/web-artifacts/`.
fn artifacts() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| e2e::root().join("target"));
    target.join("web-artifacts")
}

#[sqlx::test(migrations = "../migrations")]
async fn a_user_signs_in_talks_types_runs_out_of_balance_and_rates_the_call_in_a_real_browser(pool: PgPool) {
    e2e::ensure("scripts/livekit-server.sh", Some("start"));
    e2e::ensure("scripts/python-env.sh", None);
    e2e::ensure("scripts/speech-services.sh", Some("start"));
    let chromium = built_app_and_browser();

    // The worker with its voice on the shared test speech services, the API and the app.
    let base = "http://127.0.0.1:7890";
    let web_root = e2e::root().join("web/dist");
    let agent_name = format!("mindbot-web-{}", Uuid::new_v4().simple());
    let mut env: Vec<(&str, String)> = vec![
        ("MINDBOT_VOICE_ENABLED", "true".into()),
        ("MINDBOT_VOICE_STT_BASE_URL", base.into()),
        ("MINDBOT_VOICE_LLM_BASE_URL", base.into()),
        ("MINDBOT_VOICE_TTS_DEFAULT_BASE_URL", base.into()),
        ("MINDBOT_HTTP_WEB_ROOT", web_root.to_str().unwrap().into()),
        // A one-minute card at x1.5 is a 40 s call, under the default 60 s minimum.
        ("MINDBOT_API_MIN_SESSION_SECONDS", "30".into()),
    ];
    env.extend(api_support::api_env().into_iter().map(|(k, v)| (k, v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (_worker, port) = e2e::worker(&pool, &agent_name, &env).await;
    let api = ApiServer::at(port);

    // The caller: adult, basic plan, a one-minute card to activate in the page.
    let user = new_user(&pool).await;
    subscribe_basic(&pool, user).await;
    sqlx::query("INSERT INTO pricing_tiers (id, name, hours, price_cents, bonus_minutes) VALUES ('minute', 'One minute', 0, 10, 1)")
        .execute(&pool)
        .await
        .unwrap();
    let card = metering::cards::issue(&pool, "minute", 1, None, None).await.unwrap().remove(0);
    let token = app_token(user, 30, 3600);
    // Someone with no balance, and a free user with a card (the x1.5 persona needs basic).
    let broke = app_token(new_user(&pool).await, 30, 3600);
    let free = new_user(&pool).await;
    api_support::card(&pool, free, 10).await;
    let free = app_token(free, 30, 3600);
    let expired = app_token(user, 30, -3600);
    // What the API answers each of them: the page must show these words.
    let expect_expired = api.get("/v1/personas", Some(&expired)).await.error(401, "unauthorized")["message"].clone();
    let expect_broke = api
        .post("/v1/sessions", Some(&broke), &json!({"persona": "professor-ada"}))
        .await
        .error(402, "insufficient_balance")["message"]
        .clone();
    let locked = api.post("/v1/sessions", Some(&free), &json!({"persona": "late-night-comic"})).await;
    assert_eq!(locked.status, 403, "{}", locked.body);
    let expect_locked = locked.json()["message"].clone();

    let out_dir = artifacts();
    std::fs::create_dir_all(&out_dir).unwrap();
    let wav = out_dir.join("question.wav");
    padded_question(&wav, "What is your name?", 8, 14);
    let text = |v: &Value| v.as_str().unwrap().to_string();
    let base = format!("http://127.0.0.1:{port}/");
    let report = browser_script(
        "browser.mjs",
        &[
            ("BASE_URL", &base),
            ("CHROMIUM", &chromium),
            ("WAV", wav.to_str().unwrap()),
            ("ARTIFACTS", out_dir.to_str().unwrap()),
            ("TOKEN", &token),
            ("EXPIRED_TOKEN", &expired),
            ("BROKE_TOKEN", &broke),
            ("FREE_TOKEN", &free),
            ("CARD_CODE", &card.activation_code),
            ("PERSONA_NAME", "Max After Midnight"),
            ("LOCKED_PERSONA", "late-night-comic"),
            ("EXPECT_EXPIRED", &text(&expect_expired)),
            ("EXPECT_BROKE", &text(&expect_broke)),
            ("EXPECT_LOCKED", &text(&expect_locked)),
        ],
    )
    .await;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "figure: Start clicked to the end screen {} s, for 40 metered seconds (load average {})",
        report["figures"]["call_seconds_wall"],
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );

    // What the page showed is what the database holds: 40 metered seconds at
    // x1.5 took the whole one-minute card, ended balance_exhausted, rated once.
    let (session, metered_ms, charged_ms, reason): (Uuid, i64, i64, String) = sqlx::query_as(
        "SELECT id, metered_ms, charged_ms, end_reason FROM voice_sessions WHERE user_id = $1 AND persona_slug = 'late-night-comic'",
    )
    .bind(user)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((metered_ms, charged_ms, reason.as_str()), (40_000, 60_000, "balance_exhausted"));
    let ratings: Vec<(i32, Option<String>)> =
        sqlx::query_as("SELECT rating, feedback FROM persona_ratings WHERE user_id = $1")
            .bind(user)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(ratings, vec![(4, Some("Funny and quick.".to_string()))]);
    // The second rating the page sent was refused with the API's own words.
    let again = api
        .post("/v1/personas/late-night-comic/ratings", Some(&token), &json!({"session_id": session, "rating": 5}))
        .await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(report["second_rating"], again.json()["message"]);
    assert_eq!(report["page_errors"], json!([]), "the page threw");
}
