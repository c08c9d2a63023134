//! Shared by the API tests: an API node (`supervisor::serve_api`, in this
//! process) on a free port against the test's database, a small HTTP/1.1 client, end-user JWTs,
//! Stripe-signed webhook bodies, users, cards and sessions in the database,
//! and hand-made tokens and keys.

#![allow(dead_code)] // each test uses a different part

use std::time::Duration;

use aws_lc_rs::hmac;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mindbot_tests::db;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// At least 32 bytes: the API refuses a shorter HS256 key.
pub const JWT_SECRET: &str = "test-jwt-secret-of-the-mindbot-app";
pub const ISSUER: &str = "https://auth.mindbot.test/";
pub const AUDIENCE: &str = "mindbot-app";
pub const STRIPE_SECRET: &str = "whsec_test_secret";

pub use mindbot_tests::{root, url_for};

use crate::in_process::{self, wait_ready, Mode, Service};

/// jsonwebtoken's crypto provider, chosen before anything signs a token.
pub fn crypto() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

/// The settings every test API runs with (as environment variables).
pub fn api_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("MINDBOT_API_ENABLED", "true"),
        ("MINDBOT_API_JWT_KEY", JWT_SECRET),
        ("MINDBOT_API_JWT_ISSUER", ISSUER),
        ("MINDBOT_API_JWT_AUDIENCE", AUDIENCE),
        ("MINDBOT_API_STRIPE_WEBHOOK_SECRET", STRIPE_SECRET),
        ("MINDBOT_API_BODY_LIMIT_BYTES", "4096"),
        // Tests send bursts from one address; the limits have tests of their own.
        ("MINDBOT_API_RATE_LIMIT_PER_SECOND", "1000"),
        ("MINDBOT_API_RATE_LIMIT_BURST", "1000"),
    ]
}

/// A running API node (or the API of a running worker). Dropping it shuts it down.
pub struct ApiServer {
    pub service: Option<Service>,
    pub port: u16,
}

impl ApiServer {
    /// `/v1/me/sessions` for `user` once its newest session is no longer
    /// `active` (polled for up to 30 s): the page, newest first.
    pub async fn sessions_once_ended(&self, user: Uuid) -> Value {
        let history = async || self.get("/v1/me/sessions", Some(&token(user))).await.json();
        let mut page = history().await;
        for _ in 0..150 {
            if page["sessions"][0]["status"] != "active" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            page = history().await;
        }
        page
    }

    /// Starts an API node on a free port with the test settings plus `extra_env`; returns once it listens.
    pub async fn start(pool: &PgPool, extra_env: &[(&str, &str)]) -> ApiServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        ApiServer::start_on(pool, port, extra_env).await
    }

    /// An API node (`supervisor::serve_api`, in this process: `in_process`)
    /// on `port`; returns once it listens.
    pub async fn start_on(pool: &PgPool, port: u16, extra_env: &[(&str, &str)]) -> ApiServer {
        crypto();
        let mut env = vec![
            ("DATABASE_URL", url_for(pool)),
            ("MINDBOT_DATABASE_MIGRATE_ON_START", "false".to_string()),
            ("MINDBOT_LOG_LEVEL", "info".to_string()),
            ("MINDBOT_HTTP_ADDRESS", format!("127.0.0.1:{port}")),
        ];
        env.extend(api_env().into_iter().chain(extra_env.iter().copied()).map(|(k, v)| (k, v.to_string())));
        let (service, failed) = Service::start(Mode::Api, in_process::config(&env), "api");
        let listening = || async move { tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() };
        wait_ready("the API", failed, Duration::from_secs(20), listening).await;
        ApiServer { service: Some(service), port }
    }

    /// The API served by something already running on `port` (e.g. `mindbot-agent run`).
    pub fn at(port: u16) -> ApiServer {
        ApiServer { service: None, port }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        request(self.port, "GET", path, &headers, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        headers.push(("Content-Type", "application/json"));
        request(self.port, "POST", path, &headers, Some(body.to_string().as_bytes())).await
    }
}

impl ApiServer {
    pub async fn patch(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        headers.push(("Content-Type", "application/json"));
        request(self.port, "PATCH", path, &headers, Some(body.to_string().as_bytes())).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Reply {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        request(self.port, "DELETE", path, &headers, None).await
    }
}

/// A body for `POST /v1/me/personas`: a valid custom persona `slug` at `multiplier`.
pub fn persona_body(slug: &str, multiplier: Value) -> Value {
    json!({
        "name": "My Coach", "slug": slug, "summary": "Keeps me going.", "category": "wellness",
        "access_level": "free", "persona": "Upbeat and brief.", "purpose": "Motivation.",
        "system_prompt": "You are an upbeat coach.", "voice": {"tts": "default", "style": "warm"},
        "tools": ["get_balance"], "custom_tools": [], "safety": "No medical advice.",
        "content_filters": ["profanity"], "version": "1.0.0", "base_cost_multiplier": multiplier,
        "ad_supported": false, "premium_features": [], "user_customizable_fields": ["voice.style"]
    })
}

/// The agent dispatch metadata inside a participant token the API signed.
pub fn dispatch_metadata(token: &str) -> Value {
    let claims = livekit_api::access_token::TokenVerifier::with_api_key("devkey", "secret").verify(token).unwrap();
    let agents = claims.room_config.expect("room configuration").agents;
    serde_json::from_str(&agents[0].metadata).unwrap()
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Asserts the status and the error code of a JSON error body; returns the body.
    pub fn error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.body);
        let v = self.json();
        assert_eq!(v["error"], code, "{v}");
        assert!(v["message"].is_string(), "{v}");
        v
    }
}

/// One HTTP/1.1 request on loopback (`Connection: close`).
pub async fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Reply {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    if let Some(b) = body {
        s.write_all(b).await.unwrap();
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Reply { status, headers, body: body.to_string() }
}

/// Claims of a valid token for `user`, valid for an hour.
pub fn claims(user: Uuid) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"sub": user.to_string(), "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 3600})
}

/// Signs `claims` with HS256 and `secret`.
pub fn hs256(claims: &Value, secret: &str) -> String {
    crypto();
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

/// A valid token for `user`.
pub fn token(user: Uuid) -> String {
    hs256(&claims(user), JWT_SECRET)
}

/// A valid token for `user` claiming `age`.
pub fn token_with_age(user: Uuid, age: u32) -> String {
    let mut c = claims(user);
    c["age"] = json!(age);
    hs256(&c, JWT_SECRET)
}

/// A new active user.
pub async fn user(pool: &PgPool) -> Uuid {
    db::named_user(pool, "API User").await
}

/// Gives `user` an active card of `minutes`; its id.
pub async fn card(pool: &PgPool, user: Uuid, minutes: i32) -> Uuid {
    db::active_card(pool, user, minutes).await
}

/// A closed session of `user` with `persona`, `charged_ms` charged over `metered_ms`.
pub async fn closed_session(pool: &PgPool, user: Uuid, persona: &str, metered_ms: i64, charged_ms: i64) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO voice_sessions (user_id, session_id, room_name, status, persona_slug, metered_ms, charged_ms, \
             end_time, end_reason, duration_seconds, cost_minutes) \
         VALUES ($1, $2, $3, 'completed', $4, $5, $6, NOW(), 'user_left', $5 / 1000, ($6 + 59999) / 60000) RETURNING id",
    )
    .bind(user)
    .bind(format!("job-{}", Uuid::new_v4().simple()))
    .bind(format!("room-{}", Uuid::new_v4().simple()))
    .bind(persona)
    .bind(metered_ms)
    .bind(charged_ms)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A pricing tier.
pub async fn tier(pool: &PgPool, id: &str, hours: i32, price_cents: i32, active: bool) {
    sqlx::query("INSERT INTO pricing_tiers (id, name, hours, price_cents, bonus_minutes, description, active) VALUES ($1, $1, $2, $3, 15, 'test tier', $4)")
        .bind(id)
        .bind(hours)
        .bind(price_cents)
        .bind(active)
        .execute(pool)
        .await
        .unwrap();
}

/// A `Stripe-Signature` header for `body` at `t`, as Stripe makes it.
pub fn stripe_signature(secret: &str, t: i64, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let sig = hmac::sign(&key, format!("{t}.{body}").as_bytes());
    let hex: String = sig.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// Posts a Stripe event signed now with the configured secret.
pub async fn stripe(api: &ApiServer, event: &Value) -> Reply {
    let body = event.to_string();
    let sig = stripe_signature(STRIPE_SECRET, chrono::Utc::now().timestamp(), &body);
    let headers = [("Content-Type", "application/json"), ("Stripe-Signature", sig.as_str())];
    request(api.port, "POST", "/v1/webhooks/stripe", &headers, Some(body.as_bytes())).await
}

/// Base64 of `bytes`: unpadded base64url (JWT parts) or padded standard (PEM).
pub fn base64(bytes: &[u8], url: bool) -> String {
    let table: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &c)| n | (u32::from(c) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(table[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        if !url {
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
    }
    out
}

pub fn b64(v: &Value) -> String {
    base64(v.to_string().as_bytes(), true)
}

/// A fresh P-256 key: (PKCS#8 DER private key, SubjectPublicKeyInfo PEM public key).
pub fn p256_key() -> (Vec<u8>, String) {
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &aws_lc_rs::rand::SystemRandom::new()).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    // The fixed SPKI header of an uncompressed P-256 point.
    let mut spki = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
        0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());
    let body = base64(&spki, false);
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    (pkcs8.as_ref().to_vec(), format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n")))
}

/// The real worker serving the API itself (`run` with api.enabled), under
/// agent name `<prefix>-<uuid>` with a 2 s user grace, and a user with a
/// 5-minute card: (worker, its API, the agent name, the user).
pub async fn worker_with_api(pool: &PgPool, prefix: &str) -> (Service, ApiServer, String, Uuid) {
    crate::e2e::ensure("scripts/livekit-server.sh", Some("start"));
    crate::e2e::ensure("scripts/python-env.sh", None);
    let agent_name = format!("{prefix}-{}", Uuid::new_v4().simple());
    let mut env = api_env();
    env.push(("MINDBOT_WORKER_USER_GRACE_SECONDS", "2"));
    let (worker, port) = crate::e2e::worker(pool, &agent_name, &env).await;
    let u = user(pool).await;
    card(pool, u, 5).await;
    (worker, ApiServer::at(port), agent_name, u)
}
