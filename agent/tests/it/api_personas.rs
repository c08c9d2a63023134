//! A user's own custom personas (`/v1/me/personas`) against the real binary
//! and PostgreSQL: create, list, edit, delete or retire, only by the owner;
//! every rule (the `PersonaConfig` fields, the slug, the pricing floor) a 422
//! naming the field that changes nothing; and the quote that session tokens
//! for a custom persona carry to the worker.

use crate::api_support::*;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// Every custom persona row: (slug, owner, active, config, system_prompt).
async fn rows(pool: &PgPool) -> Vec<(String, Uuid, bool, Value, String)> {
    sqlx::query_as(
        "SELECT slug, user_id, COALESCE(is_active, TRUE), config, system_prompt FROM custom_personas ORDER BY slug",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

fn slugs_in(list: &Value) -> Vec<String> {
    list["personas"].as_array().unwrap().iter().map(|p| p["slug"].as_str().unwrap().to_string()).collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn an_owner_creates_lists_edits_and_deletes_or_retires_their_personas_and_nobody_else_can(pool: PgPool) {
    let api = ApiServer::start(&pool, &[]).await;
    let (u, v) = (user(&pool).await, user(&pool).await);
    card(&pool, u, 10).await;
    let (tu, tv) = (token(u), token(v));

    let r = api.post("/v1/me/personas", Some(&tu), &persona_body("my-coach", json!(1.5))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    assert_eq!((created["slug"].as_str(), created["multiplier"].as_str()), (Some("my-coach"), Some("1.5")));
    assert_eq!((created["is_active"].clone(), created["refused"].clone()), (json!(true), Value::Null));
    assert_eq!(created["config"]["created_by"], u.to_string(), "the server signs it as the owner");
    let stored = rows(&pool).await;
    assert_eq!((stored.len(), stored[0].1, stored[0].4.as_str()), (1, u, "You are an upbeat coach."));

    let mine = api.get("/v1/me/personas", Some(&tu)).await.json();
    assert_eq!(slugs_in(&mine), ["my-coach"]);
    let public = api.get("/v1/personas", Some(&tv)).await.json();
    let listed = public["personas"].as_array().unwrap().iter().find(|p| p["slug"] == "my-coach").unwrap().clone();
    assert_eq!((listed["source"].as_str(), listed["multiplier"].as_str()), (Some("custom"), Some("1.5")));

    // A session token for it shows the price and carries the quote (this row, this rate).
    let grant = api.post("/v1/sessions", Some(&tu), &json!({"persona": "my-coach"})).await;
    assert_eq!(grant.status, 201, "{}", grant.body);
    let grant = grant.json();
    assert_eq!((grant["multiplier"].as_str(), grant["seconds_available"].as_i64()), (Some("1.5"), Some(400)));
    let quote = dispatch_metadata(grant["token"].as_str().unwrap())["quote"].clone();
    assert_eq!((quote["custom_id"].clone(), quote["rate_ms_per_second"].clone()), (created["id"].clone(), json!(1500)));

    // Edits: the owner's, validated whole; the prompt column follows.
    let r = api
        .patch(
            "/v1/me/personas/my-coach",
            Some(&tu),
            &json!({"base_cost_multiplier": "2.25", "system_prompt": "Be brief."}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["multiplier"], "2.25");
    let stored = rows(&pool).await;
    assert_eq!((stored[0].3["base_cost_multiplier"].clone(), stored[0].4.as_str()), (json!(2.25), "Be brief."));

    // To anyone else it does not exist, and its slug is taken.
    assert!(slugs_in(&api.get("/v1/me/personas", Some(&tv)).await.json()).is_empty());
    api.patch("/v1/me/personas/my-coach", Some(&tv), &json!({"base_cost_multiplier": 1}))
        .await
        .error(404, "unknown_persona");
    api.delete("/v1/me/personas/my-coach", Some(&tv)).await.error(404, "unknown_persona");
    api.post("/v1/me/personas", Some(&tv), &persona_body("my-coach", json!(1))).await.error(409, "slug_taken");
    api.delete("/v1/me/personas/Not%20A%20Slug", Some(&tu)).await.error(404, "unknown_persona");
    assert_eq!(rows(&pool).await, stored, "nothing changed");
    api.get("/v1/me/personas", None).await.error(401, "unauthorized");

    // Never used: deleted.
    let gone = api.delete("/v1/me/personas/my-coach", Some(&tu)).await;
    assert_eq!((gone.status, gone.json()["outcome"].clone()), (200, json!("deleted")), "{}", gone.body);
    assert!(rows(&pool).await.is_empty());

    // Used by a session: retired, kept, its slug still taken, no longer offered.
    assert_eq!(api.post("/v1/me/personas", Some(&tu), &persona_body("used-coach", json!(1))).await.status, 201);
    closed_session(&pool, u, "used-coach", 5000, 5000).await;
    let retired = api.delete("/v1/me/personas/used-coach", Some(&tu)).await;
    assert_eq!((retired.status, retired.json()["outcome"].clone()), (200, json!("retired")), "{}", retired.body);
    let stored = rows(&pool).await;
    assert_eq!((stored.len(), stored[0].2), (1, false));
    let mine = api.get("/v1/me/personas", Some(&tu)).await.json();
    assert_eq!(
        (slugs_in(&mine), mine["personas"][0]["is_active"].clone()),
        (vec!["used-coach".to_string()], json!(false))
    );
    assert!(!slugs_in(&api.get("/v1/personas", Some(&tu)).await.json()).contains(&"used-coach".to_string()));
    api.post("/v1/sessions", Some(&tu), &json!({"persona": "used-coach"})).await.error(404, "unknown_persona");
    api.post("/v1/me/personas", Some(&tv), &persona_body("used-coach", json!(1))).await.error(409, "slug_taken");
    // The owner may bring it back.
    let back = api.patch("/v1/me/personas/used-coach", Some(&tu), &json!({"is_active": true})).await;
    assert_eq!((back.status, back.json()["is_active"].clone()), (200, json!(true)), "{}", back.body);
    assert_eq!(api.post("/v1/sessions", Some(&tu), &json!({"persona": "used-coach"})).await.status, 201);
}

#[sqlx::test(migrations = "../migrations")]
async fn every_custom_persona_rule_is_a_422_naming_the_field_and_changes_nothing(pool: PgPool) {
    let api = ApiServer::start(&pool, &[]).await;
    let u = user(&pool).await;
    let t = token(u);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("a built-in slug", json!({"slug": "professor-ada"}), "slug"),
        ("a slug that is not URL-safe", json!({"slug": "My Coach"}), "slug"),
        ("under the floor", json!({"base_cost_multiplier": 0.999}), "base_cost_multiplier"),
        ("half price", json!({"base_cost_multiplier": "0.5"}), "base_cost_multiplier"),
        ("four decimals", json!({"base_cost_multiplier": 1.2345}), "base_cost_multiplier"),
        ("free", json!({"base_cost_multiplier": 0}), "base_cost_multiplier"),
        ("an empty name", json!({"name": " "}), "name"),
        ("no text-to-speech profile", json!({"voice": {"tts": "", "style": "warm"}}), "voice.tts"),
        ("an unknown tool", json!({"tools": ["get_balance", "launch_rockets"]}), "tools[1]"),
        ("an age over 120", json!({"age_restriction": 121}), "age_restriction"),
        ("a zero session limit", json!({"session_time_limit": 0}), "session_time_limit"),
        ("an unknown level", json!({"access_level": "gold"}), "access_level"),
        (
            "a customizable price",
            json!({"user_customizable_fields": ["base_cost_multiplier"]}),
            "user_customizable_fields",
        ),
        ("a rating", json!({"rating": 5}), "rating"),
        ("an author", json!({"created_by": "mindbot"}), "created_by"),
        ("an unknown field", json!({"colour": "red"}), "colour"),
        ("a NUL in the prompt", json!({"system_prompt": "a\u{0}b"}), "system_prompt"),
        ("a NUL in a custom tool", json!({"custom_tools": [{"name": "x\u{0}"}]}), "custom_tools[0].name"),
    ];
    for (what, patch, field) in &cases {
        let mut body = persona_body("my-coach", json!(1));
        body.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
        let e = api.post("/v1/me/personas", Some(&t), &body).await.error(422, "invalid_field");
        assert_eq!(e["field"], *field, "{what}: {e}");
    }
    let mut body = persona_body("my-coach", json!(1));
    body.as_object_mut().unwrap().remove("system_prompt");
    let e = api.post("/v1/me/personas", Some(&t), &body).await.error(422, "invalid_field");
    assert_eq!(e["field"], "system_prompt", "{e}");
    let e = api.post("/v1/me/personas", Some(&t), &json!(["not", "an", "object"])).await.error(422, "invalid_field");
    assert_eq!(e["field"], "body", "{e}");
    assert!(rows(&pool).await.is_empty(), "no refused persona was stored");

    // Edits follow the same rules, and a refused one leaves the row as it was.
    assert_eq!(api.post("/v1/me/personas", Some(&t), &persona_body("my-coach", json!(1))).await.status, 201);
    let before = rows(&pool).await;
    for (what, patch, field) in cases.iter().filter(|(_, patch, _)| patch.get("slug").is_none()) {
        let e = api.patch("/v1/me/personas/my-coach", Some(&t), patch).await.error(422, "invalid_field");
        assert_eq!(e["field"], *field, "edit with {what}: {e}");
    }
    let e = api
        .patch("/v1/me/personas/my-coach", Some(&t), &json!({"slug": "new-coach"}))
        .await
        .error(422, "invalid_field");
    assert_eq!(e["field"], "slug", "{e}");
    assert_eq!(rows(&pool).await, before, "no refused edit changed the row");

    // The floor is the deployment's: personas.custom_min_multiplier.
    drop(api);
    let api = ApiServer::start(&pool, &[("MINDBOT_PERSONAS_CUSTOM_MIN_MULTIPLIER", "1.5")]).await;
    let e = api
        .post("/v1/me/personas", Some(&t), &persona_body("dear-coach", json!(1.25)))
        .await
        .error(422, "invalid_field");
    assert_eq!(e["field"], "base_cost_multiplier");
    assert!(e["message"].as_str().unwrap().contains("1.5"), "{e}");
    assert_eq!(api.post("/v1/me/personas", Some(&t), &persona_body("dear-coach", json!(1.5))).await.status, 201);
    // A persona made under an older, lower floor is shown refused, offered to nobody, and sold to nobody.
    let mine = api.get("/v1/me/personas", Some(&t)).await.json();
    let old = mine["personas"].as_array().unwrap().iter().find(|p| p["slug"] == "my-coach").unwrap().clone();
    assert!(old["refused"].as_str().unwrap().contains("below the minimum"), "{old}");
    assert!(!slugs_in(&api.get("/v1/personas", Some(&t)).await.json()).contains(&"my-coach".to_string()));
    card(&pool, u, 10).await;
    api.post("/v1/sessions", Some(&t), &json!({"persona": "my-coach"})).await.error(403, "persona_refused");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_user_owns_at_most_max_custom_personas_even_when_asking_in_parallel(pool: PgPool) {
    let api = ApiServer::start(&pool, &[("MINDBOT_API_MAX_CUSTOM_PERSONAS", "3")]).await;
    let u = user(&pool).await;
    let tu = token(u);
    let bodies: Vec<Value> = (0..8).map(|i| persona_body(&format!("mine-{i}"), json!(1.5))).collect();
    let replies =
        futures_util::future::join_all(bodies.iter().map(|b| api.post("/v1/me/personas", Some(&tu), b))).await;
    let created = replies.iter().filter(|r| r.status == 201).count();
    let limited = replies.iter().filter(|r| r.status == 409 && r.json()["error"] == "persona_limit").count();
    assert_eq!((created, limited), (3, 5), "{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    assert_eq!(rows(&pool).await.len(), 3);
    // Deleting one frees its place.
    let first = replies.iter().find(|r| r.status == 201).unwrap().json();
    let r = api.delete(&format!("/v1/me/personas/{}", first["slug"].as_str().unwrap()), Some(&tu)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api.post("/v1/me/personas", Some(&tu), &persona_body("mine-again", json!(1.5))).await;
    assert_eq!(r.status, 201, "{}", r.body);
}
