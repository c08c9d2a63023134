//! The public API's endpoints against the real binary (`mindbot-agent api`)
//! and the real PostgreSQL: authentication, session tokens (one joined by the
//! Python end user, bringing the real worker that serves the API too), balances, cards, personas,
//! ratings and ad views, each with its success and error paths.

use crate::e2e;

use crate::api_support::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use livekit_api::access_token::TokenVerifier;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test(migrations = "../migrations")]
async fn alg_none_wrong_keys_expired_and_strangers_are_all_the_same_401(pool: PgPool) {
    let api = ApiServer::start(&pool, &[]).await;
    let u = user(&pool).await;
    assert_eq!(api.get("/v1/me/balance", Some(&token(u))).await.status, 200);

    let none = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims(u)));
    let mut expired = claims(u);
    expired["exp"] = json!(chrono::Utc::now().timestamp() - 3600);
    let mut other_issuer = claims(u);
    other_issuer["iss"] = json!("https://evil.test/");
    let mut other_audience = claims(u);
    other_audience["aud"] = json!("another-app");
    let mut no_sub = claims(u);
    no_sub.as_object_mut().unwrap().remove("sub");
    let mut bad_age = claims(u);
    bad_age["age"] = json!("old");
    let inactive = user(&pool).await;
    sqlx::query("UPDATE users SET is_active = FALSE WHERE id = $1").bind(inactive).execute(&pool).await.unwrap();
    let hs384 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS384),
        &claims(u),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();

    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("alg none", Some(format!("Bearer {none}"))),
        ("wrong key", Some(format!("Bearer {}", hs256(&claims(u), "not-the-secret")))),
        ("expired", Some(format!("Bearer {}", hs256(&expired, JWT_SECRET)))),
        ("other issuer", Some(format!("Bearer {}", hs256(&other_issuer, JWT_SECRET)))),
        ("other audience", Some(format!("Bearer {}", hs256(&other_audience, JWT_SECRET)))),
        ("no sub", Some(format!("Bearer {}", hs256(&no_sub, JWT_SECRET)))),
        ("age not a number", Some(format!("Bearer {}", hs256(&bad_age, JWT_SECRET)))),
        ("unknown user", Some(format!("Bearer {}", token(Uuid::new_v4())))),
        ("inactive user", Some(format!("Bearer {}", token(inactive)))),
        ("unclaimed-cards owner", Some(format!("Bearer {}", token(Uuid::nil())))),
        ("another algorithm", Some(format!("Bearer {hs384}"))),
        ("basic scheme", Some(format!("Basic {}", token(u)))),
        ("garbage", Some("Bearer a.b.c".to_string())),
    ];
    let mut bodies = Vec::new();
    for (what, header) in cases {
        let headers: Vec<(&str, &str)> = header.iter().map(|h| ("Authorization", h.as_str())).collect();
        let r = request(api.port, "GET", "/v1/me/balance", &headers, None).await;
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{what}");
        bodies.push(r.body);
    }
    bodies.dedup();
    assert_eq!(bodies.len(), 1, "every refusal reads the same: {bodies:?}");
    assert_eq!(serde_json::from_str::<Value>(&bodies[0]).unwrap()["error"], "unauthorized");
}

#[sqlx::test(migrations = "../migrations")]
async fn es256_tokens_verify_with_the_public_key_and_an_hs256_forgery_does_not(pool: PgPool) {
    crypto();
    let (private, public) = p256_key();
    let api =
        ApiServer::start(&pool, &[("MINDBOT_API_JWT_ALGORITHM", "ES256"), ("MINDBOT_API_JWT_KEY", &public)]).await;
    let u = user(&pool).await;
    let signed =
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims(u), &EncodingKey::from_ec_der(&private)).unwrap();
    assert_eq!(api.get("/v1/me/cards", Some(&signed)).await.status, 200);
    // The classic confusion: HS256 keyed with the public key's text.
    let forged = hs256(&claims(u), &public);
    api.get("/v1/me/cards", Some(&forged)).await.error(401, "unauthorized");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_session_token_dispatches_the_agent_with_the_metadata_the_worker_reads(pool: PgPool) {
    let api = ApiServer::start(&pool, &[("LIVEKIT_URL", "ws://127.0.0.1:7880")]).await;
    let u = user(&pool).await;
    card(&pool, u, 10).await;
    let r = api
        .post(
            "/v1/sessions",
            Some(&token_with_age(u, 30)),
            &json!({"persona": "professor-ada", "overrides": {"voice.style": "calm"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let grant = r.json();
    assert_eq!(grant["livekit_url"], "ws://127.0.0.1:7880");
    assert_eq!(grant["persona"], "professor-ada");
    assert_eq!(grant["seconds_available"], 600);
    let claims = TokenVerifier::with_api_key("devkey", "secret").verify(grant["token"].as_str().unwrap()).unwrap();
    assert_eq!(claims.sub, u.to_string());
    assert_eq!(claims.video.room, grant["room"].as_str().unwrap());
    assert!(claims.video.room_join);
    let agents = claims.room_config.expect("room configuration").agents;
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].agent_name, "mindbot");
    let mut metadata: Value = serde_json::from_str(&agents[0].metadata).unwrap();
    // The quote: the built-in persona, its exact rate and its definition, as shown.
    let ada = personas::Catalog::builtin().get("professor-ada").unwrap().clone();
    let quote = metadata.as_object_mut().unwrap().remove("quote").expect("a quote");
    assert_eq!(
        quote,
        json!({"custom_id": null, "rate_ms_per_second": 1000, "fingerprint": personas::pricing::fingerprint(&ada)})
    );
    assert_eq!(grant["multiplier"], "1.0");
    assert_eq!(
        metadata,
        json!({"user_id": u.to_string(), "persona": "professor-ada", "overrides": {"voice.style": "calm"}, "age": 30})
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn the_api_token_brings_the_real_worker_which_meters_the_session(pool: PgPool) {
    let (_worker, api, _, u) = worker_with_api(&pool, "mindbot-test").await;
    let r = api.post("/v1/sessions", Some(&token(u)), &json!({"persona": "trivia-host"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let grant = r.json();
    let report =
        e2e::visit(grant["token"].as_str().unwrap(), &["--expect-data", "mindbot.session", "--stay", "6"]).await;
    let said = e2e::messages(&report, "mindbot.session");
    assert_eq!(said.first().and_then(|m| m["type"].as_str()), Some("started"), "{report}");
    let page = api.sessions_once_ended(u).await;
    let s = &page["sessions"][0];
    assert_eq!((s["room"].as_str(), s["persona"].as_str()), (grant["room"].as_str(), Some("trivia-host")), "{page}");
    assert_eq!(s["status"], "completed", "{page}");
    assert_eq!(s["multiplier"], "0.5");
    let (duration, cost) = (s["duration_seconds"].as_i64().unwrap(), s["cost_ms"].as_i64().unwrap());
    assert!(duration >= 1 && cost == duration * 500, "x0.5: {duration} s cost {cost} ms");
}

#[sqlx::test(migrations = "../migrations")]
async fn session_refusals_have_their_own_status_and_name_the_field(pool: PgPool) {
    let api = ApiServer::start(&pool, &[("MINDBOT_API_MIN_SESSION_SECONDS", "120")]).await;
    let u = user(&pool).await;
    card(&pool, u, 1).await;
    let t = token(u);
    let post = |body: Value| {
        let t = t.clone();
        let api = &api;
        async move { api.post("/v1/sessions", Some(&t), &body).await }
    };
    // 60 s of card time: 60 s at x1, 80 s at x0.75, 120 s at x0.5 (the minimum is 120 s).
    post(json!({"persona": "professor-ada"})).await.error(402, "insufficient_balance");
    post(json!({"persona": "story-weaver"})).await.error(402, "insufficient_balance");
    let ok = post(json!({"persona": "trivia-host"})).await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    assert_eq!(ok.json()["seconds_available"], 120);

    post(json!({"persona": "executive-coach"})).await.error(403, "access_denied");
    post(json!({"persona": "no-such-persona"})).await.error(404, "unknown_persona");
    let e = post(json!({"persona": "trivia-host", "overrides": {"safety": "none"}})).await.error(422, "invalid_field");
    assert_eq!(e["field"], "overrides.safety");
    let e = post(json!({"persona": "Not A Slug"})).await.error(422, "invalid_field");
    assert_eq!(e["field"], "persona");
    let e = post(json!({"overrides": {}})).await.error(422, "invalid_field");
    assert_eq!(e["field"], "persona");
    let e = post(json!({"persona": 7})).await.error(422, "invalid_field");
    assert_eq!(e["field"], "persona");
    let e = post(json!({"persona": "trivia-host", "colour": "red"})).await.error(422, "invalid_field");
    assert_eq!(e["field"], "colour");
    let headers = [("Authorization", format!("Bearer {t}")), ("Content-Type", "application/json".into())];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    request(api.port, "POST", "/v1/sessions", &headers, Some(b"{\"persona\":")).await.error(400, "malformed_json");
    let big = format!("{{\"persona\": \"{}\"}}", "a".repeat(5000));
    request(api.port, "POST", "/v1/sessions", &headers, Some(big.as_bytes())).await.error(413, "body_too_large");
    request(api.port, "POST", "/v1/sessions", &headers[..1], Some(b"{}")).await.error(415, "unsupported_media_type");

    // Age: the 18+ persona needs the basic level and an age claim of 18 or over.
    let adult = user(&pool).await;
    card(&pool, adult, 10).await;
    mindbot_tests::db::subscribe(&pool, adult, "basic_monthly").await;
    let comic = json!({"persona": "late-night-comic"});
    api.post("/v1/sessions", Some(&token(adult)), &comic).await.error(403, "age_restricted");
    api.post("/v1/sessions", Some(&token_with_age(adult, 16)), &comic).await.error(403, "age_restricted");
    assert_eq!(api.post("/v1/sessions", Some(&token_with_age(adult, 30)), &comic).await.status, 201);

    // Two open sessions are the default limit.
    for n in 0..2 {
        sqlx::query(
            "INSERT INTO voice_sessions (user_id, session_id, room_name, status) VALUES ($1, $2, $2, 'active')",
        )
        .bind(adult)
        .bind(format!("open-{n}"))
        .execute(&pool)
        .await
        .unwrap();
    }
    api.post("/v1/sessions", Some(&token_with_age(adult, 30)), &comic).await.error(429, "too_many_sessions");
}

/// A custom persona row: a catalog persona's config under `slug` with `multiplier`.
async fn custom_persona(pool: &PgPool, owner: Uuid, slug: &str, multiplier: f64) {
    let mut config = serde_json::to_value(personas::Catalog::builtin().get("professor-ada").unwrap()).unwrap();
    config["base_cost_multiplier"] = json!(multiplier);
    config["session_time_limit"] = Value::Null;
    e2e::insert_custom_persona(pool, owner, slug, config, "You are custom.").await;
}

#[sqlx::test(migrations = "../migrations")]
async fn custom_personas_may_not_shadow_the_catalog_or_undercut_the_standard_rate(pool: PgPool) {
    let api = ApiServer::start(&pool, &[]).await;
    let u = user(&pool).await;
    card(&pool, u, 10).await;
    custom_persona(&pool, u, "my-coach", 1.5).await;
    custom_persona(&pool, u, "professor-ada", 0.1).await;
    custom_persona(&pool, u, "bargain-bot", 0.2).await;
    let t = token(u);

    let list = api.get("/v1/personas", Some(&t)).await.json();
    let slugs: Vec<(&str, &str)> = list["personas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["slug"].as_str().unwrap(), p["source"].as_str().unwrap()))
        .collect();
    assert!(slugs.contains(&("my-coach", "custom")), "{slugs:?}");
    assert!(!slugs.iter().any(|(s, _)| *s == "bargain-bot"), "{slugs:?}");
    assert_eq!(slugs.iter().filter(|(s, _)| *s == "professor-ada").count(), 1);
    assert!(slugs.contains(&("professor-ada", "catalog")));
    // A free user is not offered basic or premium personas.
    assert!(!slugs.iter().any(|(s, _)| *s == "executive-coach" || *s == "fitness-coach"), "{slugs:?}");
    let ada = list["personas"].as_array().unwrap().iter().find(|p| p["slug"] == "professor-ada").unwrap().clone();
    assert_eq!(ada["multiplier"], "1.0");

    assert_eq!(api.post("/v1/sessions", Some(&t), &json!({"persona": "my-coach"})).await.status, 201);
    api.post("/v1/sessions", Some(&t), &json!({"persona": "professor-ada"})).await.error(403, "persona_refused");
    api.post("/v1/sessions", Some(&t), &json!({"persona": "bargain-bot"})).await.error(403, "persona_refused");
}

#[sqlx::test(migrations = "../migrations")]
async fn balance_cards_and_session_history_are_exact_and_paged(pool: PgPool) {
    let api = ApiServer::start(&pool, &[]).await;
    let u = user(&pool).await;
    let a = card(&pool, u, 10).await;
    card(&pool, u, 5).await;
    // 12.345 s charged from the first card.
    sqlx::query("UPDATE time_cards SET remaining_minutes = 9, remaining_sub_ms = 47655 WHERE id = $1")
        .bind(a)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO time_cards (user_id, activation_code, total_minutes, remaining_minutes, status) VALUES ($1, 'REFUNDED-1', 3, 0, 'refunded')")
        .bind(u)
        .execute(&pool)
        .await
        .unwrap();
    let t = token(u);

    let b = api.get("/v1/me/balance", Some(&t)).await.json();
    assert_eq!(b["balance_ms"], 15 * 60_000 - 12_345);
    assert_eq!(b["balance_minutes"], 14);
    assert_eq!(b["cards"].as_array().unwrap().len(), 3);
    let ada = b["personas"].as_array().unwrap().iter().find(|p| p["persona"] == "professor-ada").unwrap().clone();
    assert_eq!(ada["seconds"], (15 * 60_000 - 12_345) / 1000);
    let trivia = b["personas"].as_array().unwrap().iter().find(|p| p["persona"] == "trivia-host").unwrap().clone();
    assert_eq!(trivia["seconds"], (15 * 60_000 - 12_345) / 500);

    let cards = api.get("/v1/me/cards", Some(&t)).await.json();
    let cards = cards["cards"].as_array().unwrap();
    assert_eq!(cards.len(), 3);
    assert_eq!(cards[0]["balance_ms"], 10 * 60_000 - 12_345);
    assert_eq!(cards[0]["spendable"], true);
    assert_eq!(cards[2]["status"], "refunded");
    assert!(cards.iter().all(|c| c.get("activation_code").is_none()));

    for n in 0..3 {
        closed_session(&pool, u, "trivia-host", 61_500 + n, 30_750).await;
    }
    let page = api.get("/v1/me/sessions?limit=2", Some(&t)).await.json();
    assert_eq!(page["sessions"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_offset"], 2);
    let s = &page["sessions"][0];
    assert_eq!(
        (s["duration_seconds"].clone(), s["cost_ms"].clone(), s["cost_minutes"].clone()),
        (json!(61), json!(30_750), json!(1))
    );
    assert_eq!(s["end_reason"], "user_left");
    assert_eq!(s["persona"], "trivia-host");
    let last = api.get("/v1/me/sessions?limit=2&offset=2", Some(&t)).await.json();
    assert_eq!(last["sessions"].as_array().unwrap().len(), 1);
    assert!(last["next_offset"].is_null());
    // Another user sees none of them.
    let other = api.get("/v1/me/sessions", Some(&token(user(&pool).await))).await.json();
    assert!(other["sessions"].as_array().unwrap().is_empty());

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("offset=-1", "offset"),
        ("limit=abc", "limit"),
        ("page=2", "page"),
    ] {
        let e = api.get(&format!("/v1/me/sessions?{query}"), Some(&t)).await.error(422, "invalid_field");
        assert_eq!(e["field"], field, "{query}: {e}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn card_activation_is_idempotent_per_user_and_rate_limited(pool: PgPool) {
    let api = ApiServer::start(&pool, &[]).await;
    tier(&pool, "starter", 1, 999, true).await;
    let issued = metering::cards::issue(&pool, "starter", 1, None, None).await.unwrap();
    let code = issued[0].activation_code.clone();
    let (u, v) = (user(&pool).await, user(&pool).await);

    let first = api.post("/v1/cards/activate", Some(&token(u)), &json!({"code": code.to_lowercase()})).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let first = first.json();
    assert_eq!(first["newly_activated"], true);
    assert_eq!(first["card"]["balance_ms"], 75 * 60_000);
    let again = api.post("/v1/cards/activate", Some(&token(u)), &json!({"code": code})).await.json();
    assert_eq!(again["newly_activated"], false);
    assert_eq!(again["card"]["id"], first["card"]["id"]);
    // Someone else's card is as unknown as a typo.
    let e = api.post("/v1/cards/activate", Some(&token(v)), &json!({"code": code})).await.error(422, "invalid_field");
    assert_eq!(e["field"], "code");
    // A used card's code cannot be activated again.
    sqlx::query("UPDATE time_cards SET status = 'used', remaining_minutes = 0 WHERE id = $1")
        .bind(issued[0].id)
        .execute(&pool)
        .await
        .unwrap();
    api.post("/v1/cards/activate", Some(&token(u)), &json!({"code": code})).await.error(409, "code_used");

    let e = api.post("/v1/cards/activate", Some(&token(u)), &json!({})).await.error(422, "invalid_field");
    assert_eq!(e["field"], "code");
    // Five wrong codes (v has one already) and the sixth attempt is refused, even a right one.
    for _ in 0..4 {
        api.post("/v1/cards/activate", Some(&token(v)), &json!({"code": "0000-0000-0000-0000-0000"}))
            .await
            .error(422, "invalid_field");
    }
    let fresh = metering::cards::issue(&pool, "starter", 1, None, None).await.unwrap();
    let r = api.post("/v1/cards/activate", Some(&token(v)), &json!({"code": fresh[0].activation_code})).await;
    r.error(429, "rate_limited");
    assert_eq!(r.header("retry-after"), Some("900"));
}

#[sqlx::test(migrations = "../migrations")]
async fn ratings_are_one_per_session_and_keep_the_custom_persona_mean(pool: PgPool) {
    let api = ApiServer::start(&pool, &[]).await;
    let u = user(&pool).await;
    custom_persona(&pool, u, "my-coach", 1.5).await;
    let (s1, s2) = (
        closed_session(&pool, u, "my-coach", 5000, 7500).await,
        closed_session(&pool, u, "my-coach", 5000, 7500).await,
    );
    let t = token(u);
    let rate = |session: Uuid, rating: Value, slug: &'static str| {
        let t = t.clone();
        let api = &api;
        async move {
            api.post(
                &format!("/v1/personas/{slug}/ratings"),
                Some(&t),
                &json!({"session_id": session, "rating": rating, "feedback": "ok"}),
            )
            .await
        }
    };
    let r = rate(s1, json!(5), "my-coach").await;
    assert_eq!(r.status, 201, "{}", r.body);
    rate(s1, json!(4), "my-coach").await.error(409, "already_rated");
    let r = rate(s2, json!(2), "my-coach").await.json();
    assert_eq!((r["mean"].clone(), r["ratings"].clone()), (json!(3.5), json!(2)));
    let stored: f64 = sqlx::query_scalar("SELECT rating::float8 FROM custom_personas WHERE slug = 'my-coach'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 3.5);
    let quality: Option<i32> = sqlx::query_scalar("SELECT quality_rating FROM voice_sessions WHERE id = $1")
        .bind(s2)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(quality, Some(2));
    let listed = api.get("/v1/personas", Some(&t)).await.json();
    let coach = listed["personas"].as_array().unwrap().iter().find(|p| p["slug"] == "my-coach").unwrap().clone();
    assert_eq!((coach["rating"].clone(), coach["ratings"].clone()), (json!(3.5), json!(2)));

    let e =
        rate(closed_session(&pool, u, "my-coach", 1, 1).await, json!(6), "my-coach").await.error(422, "invalid_field");
    assert_eq!(e["field"], "rating");
    rate(s1, json!(3), "professor-ada").await.error(404, "unknown_session");
    let theirs = closed_session(&pool, user(&pool).await, "my-coach", 1, 1).await;
    rate(theirs, json!(3), "my-coach").await.error(404, "unknown_session");
    let e = api
        .post("/v1/personas/my-coach/ratings", Some(&t), &json!({"session_id": "nope", "rating": 3}))
        .await
        .error(422, "invalid_field");
    assert_eq!(e["field"], "session_id");
}

#[sqlx::test(migrations = "../migrations")]
async fn ad_views_are_validated_and_tiers_listed(pool: PgPool) {
    let api = ApiServer::start(&pool, &[]).await;
    let u = user(&pool).await;
    let t = token(u);
    let ok = json!({"ad_id": "spring-sale-42", "ad_type": "video", "view_duration": 30, "completed": true});
    let r = api.post("/v1/ads/interactions", Some(&t), &ok).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let (count, completed): (i64, bool) =
        sqlx::query_as("SELECT COUNT(*), bool_and(completed) FROM ad_interactions WHERE user_id = $1")
            .bind(u)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((count, completed), (1, true));
    for (patch, field) in [
        (json!({"ad_id": ""}), "ad_id"),
        (json!({"ad_type": "Video!"}), "ad_type"),
        (json!({"view_duration": -1}), "view_duration"),
        (json!({"view_duration": 86_401}), "view_duration"),
        (json!({"revenue": 100}), "revenue"),
    ] {
        let mut body = ok.clone();
        body.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
        let e = api.post("/v1/ads/interactions", Some(&t), &body).await.error(422, "invalid_field");
        assert_eq!(e["field"], field, "{e}");
    }
    api.post("/v1/ads/interactions", None, &ok).await.error(401, "unauthorized");

    tier(&pool, "pro", 10, 4999, true).await;
    tier(&pool, "retired", 5, 100, false).await;
    let tiers = api.get("/v1/tiers", None).await.json();
    let tiers = tiers["tiers"].as_array().unwrap();
    assert!(tiers.iter().any(|t| t["id"] == "pro" && t["card_minutes"] == 615), "{tiers:?}");
    assert!(!tiers.iter().any(|t| t["id"] == "retired"));
    api.get("/v1/nothing-here", None).await.error(404, "not_found");
    let doc = api.get("/v1/openapi.json", None).await.json();
    assert!(doc["paths"]["/v1/sessions"]["post"].is_object());
}

/// Reservations (tokens issued and not yet used nor expired) of `user`.
async fn live_reservations(pool: &PgPool, user: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM session_reservations WHERE user_id = $1 AND consumed_at IS NULL AND expires_at > NOW()",
    )
    .bind(user)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn max_open_sessions_holds_because_unused_tokens_count_and_the_third_token_is_429(pool: PgPool) {
    let api = ApiServer::start(&pool, &[("MINDBOT_API_MAX_OPEN_SESSIONS", "2")]).await;
    let u = user(&pool).await;
    card(&pool, u, 60).await;
    let ada = json!({"persona": "professor-ada"});
    // Two tokens nobody has used yet hold both places: no session row exists.
    for _ in 0..2 {
        let r = api.post("/v1/sessions", Some(&token(u)), &ada).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let e = api.post("/v1/sessions", Some(&token(u)), &ada).await.error(429, "too_many_sessions");
    assert!(e["message"].as_str().unwrap().contains("max_open_sessions = 2"), "{e}");
    assert_eq!(live_reservations(&pool, u).await, 2, "a refused request reserves nothing");

    // An expired token frees its place.
    sqlx::query(
        "UPDATE session_reservations SET created_at = NOW() - INTERVAL '2 hours', expires_at = NOW() - INTERVAL '1 hour' \
         WHERE id = (SELECT id FROM session_reservations WHERE user_id = $1 LIMIT 1)",
    )
    .bind(u)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(api.post("/v1/sessions", Some(&token(u)), &ada).await.status, 201);
    api.post("/v1/sessions", Some(&token(u)), &ada).await.error(429, "too_many_sessions");

    // Parallel requests cannot both take the last place: of eight at once
    // for a fresh user, exactly two get a token.
    let v = user(&pool).await;
    card(&pool, v, 60).await;
    let t = token(v);
    let replies = futures_util::future::join_all((0..8).map(|_| api.post("/v1/sessions", Some(&t), &ada))).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 2, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 6, "{statuses:?}");
    assert_eq!(live_reservations(&pool, v).await, 2);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_daily_limited_persona_gets_one_open_token_at_a_time(pool: PgPool) {
    let api = ApiServer::start(&pool, &[("MINDBOT_API_MAX_OPEN_SESSIONS", "5")]).await;
    let u = user(&pool).await;
    card(&pool, u, 60).await;
    // trivia-host has a daily limit: a second token could spend the same allowance twice.
    let trivia = json!({"persona": "trivia-host"});
    assert_eq!(api.post("/v1/sessions", Some(&token(u)), &trivia).await.status, 201);
    let e = api.post("/v1/sessions", Some(&token(u)), &trivia).await.error(429, "persona_session_open");
    assert!(e["message"].as_str().unwrap().contains("trivia-host"), "{e}");
    // Another persona (no daily limit) is still fine.
    assert_eq!(api.post("/v1/sessions", Some(&token(u)), &json!({"persona": "professor-ada"})).await.status, 201);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_session_with_no_metered_second_cannot_be_rated(pool: PgPool) {
    let api = ApiServer::start(&pool, &[]).await;
    let u = user(&pool).await;
    custom_persona(&pool, u, "my-coach", 1.5).await;
    let joined_and_left = closed_session(&pool, u, "my-coach", 0, 0).await;
    let under_a_second = closed_session(&pool, u, "my-coach", 999, 0).await;
    for s in [joined_and_left, under_a_second] {
        let e = api
            .post("/v1/personas/my-coach/ratings", Some(&token(u)), &json!({"session_id": s, "rating": 5}))
            .await
            .error(409, "session_not_metered");
        assert!(e["message"].as_str().unwrap().contains(&s.to_string()), "{e}");
    }
    let ratings: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM persona_ratings").fetch_one(&pool).await.unwrap();
    assert_eq!(ratings, 0, "nothing recorded");
    let talked = closed_session(&pool, u, "my-coach", 1000, 1500).await;
    let r =
        api.post("/v1/personas/my-coach/ratings", Some(&token(u)), &json!({"session_id": talked, "rating": 5})).await;
    assert_eq!(r.status, 201, "{}", r.body);
}
