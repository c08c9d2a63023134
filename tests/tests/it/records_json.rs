//! The record types of `metering::records` speak the seed's JSON.
//!
//! Each type is checked against a hand-written sample in the exact shape of
//! its TypeScript interface in the seed document (or, for the tables without
//! an interface, of its table's columns): the sample's keys and value kinds
//! are checked against the shape read from the seed document, then the
//! sample is deserialized and serialized back and must come out the same.
//! Around that: `null` accepted exactly where the shape allows it, unknown
//! fields and unknown status values refused with the culprit named,
//! timestamps in RFC 3339. Then every type is read from a real migrated
//! database through its `*_COLUMNS` select list, from rows written the seed's
//! way, and its JSON checked against the same shape.

use std::collections::BTreeSet;
use std::fmt::{Debug, Display};
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use metering::records::*;
use metering::Rate;
use mindbot_tests::{insert_seed_rows, insert_user, read_seed_schema, seed_interfaces, seed_tables, SeedRows};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgPool};

/// What a JSON value must be.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Uuid,
    Text,
    /// An RFC 3339 date-time string.
    Timestamp,
    Integer,
    Number,
    Bool,
    /// Any JSON, `null` included (a JSONB value).
    Json,
    /// One of these strings.
    OneOf(Vec<String>),
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    kind: Kind,
    nullable: bool,
}

/// The kind of a column's values, from its seed type.
fn column_kind(sql_type: &str) -> Kind {
    match sql_type {
        "UUID" => Kind::Uuid,
        "TEXT" => Kind::Text,
        "TIMESTAMPTZ" => Kind::Timestamp,
        "INTEGER" => Kind::Integer,
        "DECIMAL" => Kind::Number,
        "BOOLEAN" => Kind::Bool,
        "JSONB" => Kind::Json,
        other => panic!("no JSON kind for seed type {other}"),
    }
}

/// The JSON shape of a seed interface. TypeScript says `string` and
/// `number`; the table of the same data says which strings are UUIDs or
/// timestamps and which numbers are integers.
fn interface_shape(interface: &str, table: &str) -> Vec<Field> {
    let doc = read_seed_schema();
    let iface = seed_interfaces(&doc)
        .into_iter()
        .find(|i| i.name == interface)
        .unwrap_or_else(|| panic!("the seed has no interface {interface}"));
    let table = seed_tables(&doc).into_iter().find(|t| t.name == table).expect("seed table");
    iface
        .fields
        .iter()
        .map(|(name, ty)| {
            let column = column_kind(&table.column(name).sql_type);
            let alternatives: Vec<&str> = ty.split('|').map(str::trim).collect();
            let nullable = alternatives.contains(&"null");
            let rest: Vec<&str> = alternatives.into_iter().filter(|a| *a != "null").collect();
            let kind = match rest.as_slice() {
                ["string"] if matches!(column, Kind::Uuid | Kind::Timestamp) => column,
                ["string"] => Kind::Text,
                ["number"] if column == Kind::Integer => Kind::Integer,
                ["number"] => Kind::Number,
                ["boolean"] => Kind::Bool,
                lits if lits.iter().all(|l| l.starts_with('\'')) => {
                    Kind::OneOf(lits.iter().map(|l| l.trim_matches('\'').to_string()).collect())
                }
                other => panic!("{interface}.{name}: no JSON kind for {other:?}"),
            };
            Field { name: name.clone(), kind, nullable }
        })
        .collect()
}

/// The JSON shape of a seed table without an interface: one field per
/// column, `null` only where the column is nullable and has no default (a
/// defaulted column is read through the select list's COALESCE).
fn table_shape(table: &str) -> Vec<Field> {
    let table = seed_tables(&read_seed_schema()).into_iter().find(|t| t.name == table).expect("seed table");
    table
        .columns
        .iter()
        .map(|c| Field {
            name: c.name.clone(),
            kind: column_kind(&c.sql_type),
            nullable: c.nullable() && c.default.is_none(),
        })
        .collect()
}

/// Panics unless `value` is an object with exactly the shape's keys, each
/// holding a value of its kind.
fn check_shape(what: &str, shape: &[Field], value: &Value) {
    let object = value.as_object().unwrap_or_else(|| panic!("{what}: not a JSON object: {value}"));
    let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = shape.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(keys, expected, "{what}: keys");
    for f in shape {
        let v = &object[&f.name];
        let ok = match (&f.kind, v) {
            (Kind::Json, _) => true,
            (_, Value::Null) => f.nullable,
            (Kind::Uuid, Value::String(s)) => uuid::Uuid::parse_str(s).is_ok(),
            (Kind::Text, Value::String(_)) => true,
            (Kind::Timestamp, Value::String(s)) => DateTime::parse_from_rfc3339(s).is_ok(),
            (Kind::Integer, Value::Number(n)) => n.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            (Kind::Number, Value::Number(_)) => true,
            (Kind::Bool, Value::Bool(_)) => true,
            (Kind::OneOf(allowed), Value::String(s)) => allowed.contains(s),
            _ => false,
        };
        assert!(ok, "{what}.{}: {v} is not a {:?}{}", f.name, f.kind, if f.nullable { " or null" } else { "" });
    }
}

/// Deserializes `sample` as `T` and serializes it back: the same JSON, and
/// the same value again when read from the serialized text.
fn round_trip<T>(what: &str, sample: &Value) -> T
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let value: T = serde_json::from_value(sample.clone()).unwrap_or_else(|e| panic!("{what}: {e}\n{sample:#}"));
    assert_eq!(&serde_json::to_value(&value).unwrap(), sample, "{what}: serialized back");
    let text = serde_json::to_string(&value).unwrap();
    assert_eq!(serde_json::from_str::<T>(&text).unwrap(), value, "{what}: read back from {text}");
    value
}

fn with(sample: &Value, key: &str, v: Value) -> Value {
    let mut s = sample.clone();
    s[key] = v;
    s
}

fn without(sample: &Value, key: &str) -> Value {
    let mut s = sample.clone();
    s.as_object_mut().unwrap().remove(key);
    s
}

fn error_of<T: DeserializeOwned + Debug>(value: Value) -> String {
    match serde_json::from_value::<T>(value.clone()) {
        Ok(v) => panic!("accepted {value} as {v:?}"),
        Err(e) => e.to_string(),
    }
}

/// Everything checked on a record type and its sample.
fn check_record<T>(what: &str, shape: &[Field], sample: Value) -> T
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    check_shape(&format!("{what} sample"), shape, &sample);
    let value = round_trip::<T>(what, &sample);

    // Every nullable field null at once: accepted and written back as null.
    let mut nulls = sample.clone();
    for f in shape.iter().filter(|f| f.nullable) {
        nulls[&f.name] = Value::Null;
    }
    check_shape(&format!("{what} with nulls"), shape, &nulls);
    round_trip::<T>(&format!("{what} with nulls"), &nulls);

    for f in shape.iter().filter(|f| !f.nullable && f.kind != Kind::Json) {
        error_of::<T>(with(&sample, &f.name, Value::Null));
        let e = error_of::<T>(without(&sample, &f.name));
        assert!(e.contains(&format!("missing field `{}`", f.name)), "{what}.{}: required: {e}", f.name);
        let wrong = if f.kind == Kind::Bool { json!("true") } else { json!(true) };
        error_of::<T>(with(&sample, &f.name, wrong));
    }
    for f in shape.iter().filter(|f| f.kind == Kind::Timestamp) {
        for bad in [json!("2025-03-04"), json!("yesterday"), json!(1_741_064_889)] {
            error_of::<T>(with(&sample, &f.name, bad));
        }
    }

    let e = error_of::<T>(with(&sample, "surprise", json!(1)));
    assert!(e.contains("unknown field `surprise`"), "{what}: unknown field refused by name: {e}");
    value
}

const USER_ID: &str = "6f1c2a8e-3b4d-4e5f-8a9b-0c1d2e3f4a5b";
const CARD_ID: &str = "0b7e3c1d-9a2f-4c6e-b8d0-1e2f3a4b5c6d";

fn user_sample() -> Value {
    json!({
        "id": USER_ID,
        "email": "ada@example.com",
        "full_name": "Ada Lovelace",
        "created_at": "2025-01-02T03:04:05Z",
        "last_login": "2025-03-04T05:06:07.123456Z",
        "is_active": true,
        "email_verified": false
    })
}

fn card_sample() -> Value {
    json!({
        "id": CARD_ID,
        "user_id": USER_ID,
        "activation_code": "MB-7K2Q-9XPL",
        "total_minutes": 600,
        "remaining_minutes": 451,
        "activated_at": "2025-02-01T10:00:00Z",
        "expires_at": "2026-02-01T10:00:00Z",
        "created_at": "2025-01-31T09:59:58.500Z",
        "status": "active",
        "stripe_payment_intent_id": "pi_3QxYz2LkdIwHu7ix0abcdEFG"
    })
}

fn voice_session_sample() -> Value {
    json!({
        "id": "2c9d4e6f-8a1b-4c3d-9e5f-7a8b9c0d1e2f",
        "user_id": USER_ID,
        "session_id": "sess_01HQ3Z9X",
        "room_name": "mindbot-room-42",
        "start_time": "2025-02-01T10:05:00Z",
        "end_time": "2025-02-01T10:17:31Z",
        "duration_seconds": 751,
        "cost_minutes": 13,
        "status": "completed",
        "agent_type": "production",
        "quality_rating": 5
    })
}

fn subscription_sample() -> Value {
    json!({
        "id": "3d0e5f7a-9b2c-4d4e-8f6a-8b9c0d1e2f3a",
        "user_id": USER_ID,
        "plan_id": "monthly-unlimited",
        "status": "trialing",
        "current_period_start": "2025-02-01T00:00:00Z",
        "current_period_end": "2025-03-01T00:00:00Z",
        "cancel_at_period_end": false,
        "stripe_subscription_id": "sub_1QxYz2LkdIwHu7ix",
        "created_at": "2025-02-01T00:00:01Z"
    })
}

fn tier_sample() -> Value {
    json!({
        "id": "starter",
        "name": "Starter",
        "hours": 5,
        "price_cents": 2500,
        "bonus_minutes": 30,
        "description": "Five hours of conversation, plus thirty minutes on us",
        "active": true,
        "created_at": "2025-01-01T00:00:00Z"
    })
}

fn payment_sample() -> Value {
    json!({
        "id": "4e1f6a8b-0c3d-4e5f-9a7b-9c0d1e2f3a4b",
        "user_id": USER_ID,
        "stripe_payment_intent_id": "pi_3QxYz2LkdIwHu7ix0abcdEFG",
        "amount_cents": 2500,
        "currency": "usd",
        "status": "succeeded",
        "time_card_id": CARD_ID,
        "created_at": "2025-01-31T09:59:58Z",
        "metadata": {"tier_id": "starter", "receipt": ["line", 1, null, true]}
    })
}

fn persona_session_sample() -> Value {
    json!({
        "id": "5f2a7b9c-1d4e-4f6a-8b8c-0d1e2f3a4b5c",
        "user_id": USER_ID,
        "persona_slug": "professor-ada",
        "session_id": "sess_01HQ3Z9X",
        "duration_minutes": 13,
        "cost_multiplier": 1.25,
        "created_at": "2025-02-01T10:05:00Z"
    })
}

fn persona_rating_sample() -> Value {
    json!({
        "id": "6a3b8c0d-2e5f-4a7b-9c9d-1e2f3a4b5c6d",
        "user_id": USER_ID,
        "persona_slug": "professor-ada",
        "rating": 4,
        "feedback": "Patient and clear.",
        "created_at": "2025-02-01T10:18:00Z"
    })
}

fn custom_persona_sample() -> Value {
    json!({
        "id": "7b4c9d1e-3f6a-4b8c-8d0e-2f3a4b5c6d7e",
        "user_id": USER_ID,
        "slug": "grandmas-kitchen",
        "name": "Grandma's Kitchen",
        "config": {"voice": {"tts": "warm", "style": "slow"}, "tools": [], "age_restriction": null},
        "system_prompt": "You are a kind grandmother who loves to cook.",
        "created_at": "2025-01-15T12:00:00Z",
        "is_active": true,
        "usage_count": 42,
        "rating": 4.5
    })
}

fn ad_interaction_sample() -> Value {
    json!({
        "id": "8c5d0e2f-4a7b-4c9d-9e1f-3a4b5c6d7e8f",
        "user_id": USER_ID,
        "ad_id": "ad-2025-spring",
        "ad_type": "video",
        "view_duration": 30,
        "completed": true,
        "interacted": false,
        "revenue": 0.0125,
        "created_at": "2025-02-01T10:04:00Z"
    })
}

#[test]
fn user_matches_its_interface() {
    let user: User = check_record("User", &interface_shape("User", "users"), user_sample());
    assert_eq!(user.id.to_string(), USER_ID);
    assert_eq!(
        user.last_login,
        Some(Utc.with_ymd_and_hms(2025, 3, 4, 5, 6, 7).unwrap() + chrono::Duration::microseconds(123_456))
    );
    let e = error_of::<User>(with(&user_sample(), "password_hash", json!("$argon2id$...")));
    assert!(e.contains("unknown field `password_hash`"), "{e}");
}

#[test]
fn time_card_matches_its_interface() {
    let card: TimeCard = check_record("TimeCard", &interface_shape("TimeCard", "time_cards"), card_sample());
    assert_eq!(card.status, CardStatus::Active);
    assert_eq!(card.remaining_sub_ms, 0, "the sub-minute balance is not part of the interface");
    let e = error_of::<TimeCard>(with(&card_sample(), "remaining_sub_ms", json!(1234)));
    assert!(e.contains("unknown field `remaining_sub_ms`"), "{e}");

    // Serializing never leaks the sub-minute part either.
    let exact = TimeCard { remaining_sub_ms: 59_999, ..card };
    assert_eq!(serde_json::to_value(&exact).unwrap(), card_sample());
}

#[test]
fn voice_session_matches_its_interface() {
    let s: VoiceSession =
        check_record("VoiceSession", &interface_shape("VoiceSession", "voice_sessions"), voice_session_sample());
    assert_eq!(s.status, SessionStatus::Completed);
}

#[test]
fn subscription_matches_its_interface() {
    let s: Subscription =
        check_record("Subscription", &interface_shape("Subscription", "user_subscriptions"), subscription_sample());
    assert_eq!(s.status, SubscriptionStatus::Trialing);
}

#[test]
fn pricing_tier_matches_its_interface() {
    let t: PricingTier = check_record("PricingTier", &interface_shape("PricingTier", "pricing_tiers"), tier_sample());
    assert_eq!(t.card_minutes().unwrap(), 330);
}

#[test]
fn payment_matches_its_table() {
    let p: Payment = check_record("Payment", &table_shape("payment_history"), payment_sample());
    assert_eq!(p.time_card_id.map(|c| c.to_string()).as_deref(), Some(CARD_ID));
    assert_eq!(p.metadata.as_ref().unwrap()["tier_id"], "starter");
}

#[test]
fn persona_session_matches_its_table() {
    let s: PersonaSession = check_record("PersonaSession", &table_shape("persona_sessions"), persona_session_sample());
    assert_eq!(s.cost_multiplier.0.ms_per_second(), 1250, "the multiplier is exact");
    for bad in [json!(0), json!(-1.5), json!(1.2345), json!("cheap")] {
        error_of::<PersonaSession>(with(&persona_session_sample(), "cost_multiplier", bad));
    }
}

#[test]
fn persona_rating_matches_its_table() {
    let r: PersonaRating = check_record("PersonaRating", &table_shape("persona_ratings"), persona_rating_sample());
    assert_eq!(r.rating, 4);
}

#[test]
fn custom_persona_matches_its_table() {
    let p: CustomPersona = check_record("CustomPersona", &table_shape("custom_personas"), custom_persona_sample());
    assert_eq!(p.config["voice"]["tts"], "warm");
    assert_eq!(p.rating, 4.5);
}

#[test]
fn ad_interaction_matches_its_table() {
    let a: AdInteraction = check_record("AdInteraction", &table_shape("ad_interactions"), ad_interaction_sample());
    assert_eq!(a.revenue, "0.0125", "revenue is kept as exact decimal text");
}

/// The quoted values of an SQL `CHECK (x IN ('a', 'b'))`.
fn check_values(table: &str) -> Vec<String> {
    let t = seed_tables(&read_seed_schema()).into_iter().find(|t| t.name == table).unwrap();
    let check = t.column("status").check.clone().unwrap_or_else(|| panic!("{table}.status has a CHECK"));
    check.split('\'').skip(1).step_by(2).map(str::to_string).collect()
}

fn check_status<E>(what: &str, values: Vec<&str>, interface: &str, table: &str)
where
    E: DeserializeOwned + Serialize + FromStr + Display + Debug,
    E::Err: Display,
{
    let shape = interface_shape(interface, table);
    let Kind::OneOf(ts) = &shape.iter().find(|f| f.name == "status").unwrap().kind else {
        panic!("{interface}.status is a union of strings");
    };
    assert_eq!(&values, ts, "{what}: the Rust values are the interface's, in order");
    assert_eq!(values, check_values(table), "{what}: the Rust values are the table's CHECK list, in order");
    for v in &values {
        let parsed: E = serde_json::from_value(json!(v)).unwrap_or_else(|e| panic!("{what} {v}: {e}"));
        assert_eq!(serde_json::to_value(&parsed).unwrap(), json!(v));
        assert_eq!(v.parse::<E>().map(|e| e.to_string()).ok().as_deref(), Some(*v));
    }
    for bad in ["paused", "Active", "ACTIVE", " active", ""] {
        let e = error_of::<E>(json!(bad));
        assert!(e.contains(&format!("`{bad}`")), "{what}: JSON error names {bad:?}: {e}");
        let e = bad.parse::<E>().map(|v| v.to_string()).expect_err(bad).to_string();
        assert!(e.contains(&format!("{bad:?}")), "{what}: parse error names {bad:?}: {e}");
    }
}

#[test]
fn status_values_are_the_seeds_and_nothing_else() {
    check_status::<CardStatus>(
        "card status",
        CardStatus::ALL.iter().map(|s| s.as_str()).collect(),
        "TimeCard",
        "time_cards",
    );
    check_status::<SessionStatus>(
        "session status",
        SessionStatus::ALL.iter().map(|s| s.as_str()).collect(),
        "VoiceSession",
        "voice_sessions",
    );
    check_status::<SubscriptionStatus>(
        "subscription status",
        SubscriptionStatus::ALL.iter().map(|s| s.as_str()).collect(),
        "Subscription",
        "user_subscriptions",
    );

    // Inside a record, an unknown status is an error naming the value.
    let e = error_of::<TimeCard>(with(&card_sample(), "status", json!("paused")));
    assert!(e.contains("paused"), "{e}");
    let e = error_of::<VoiceSession>(with(&voice_session_sample(), "status", json!("hung_up")));
    assert!(e.contains("hung_up"), "{e}");
    let e = error_of::<Subscription>(with(&subscription_sample(), "status", json!("cancelled")));
    assert!(e.contains("cancelled"), "{e}");
}

#[test]
fn timestamps_are_rfc3339_in_utc() {
    // Another offset is the same instant, written back in UTC.
    let card: TimeCard =
        serde_json::from_value(with(&card_sample(), "activated_at", json!("2025-02-01T12:00:00+02:00")))
            .expect("an RFC 3339 offset is accepted");
    assert_eq!(card.activated_at, Some(Utc.with_ymd_and_hms(2025, 2, 1, 10, 0, 0).unwrap()));
    assert_eq!(serde_json::to_value(&card).unwrap()["activated_at"], "2025-02-01T10:00:00Z");

    // Sub-second precision survives, microseconds as PostgreSQL keeps them.
    for t in ["2025-02-01T10:00:00.5Z", "2025-02-01T10:00:00.123Z", "2025-02-01T10:00:00.123456Z"] {
        let c: TimeCard = serde_json::from_value(with(&card_sample(), "created_at", json!(t))).unwrap();
        let written = serde_json::to_value(&c).unwrap()["created_at"].as_str().unwrap().to_string();
        assert_eq!(DateTime::parse_from_rfc3339(&written).unwrap(), DateTime::parse_from_rfc3339(t).unwrap());
    }
}

/// Reads one row of `table` through `columns`.
async fn read<T>(pool: &PgPool, columns: &str, table: &str, id: &str) -> T
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    sqlx::query_as::<_, T>(&format!("SELECT {columns} FROM {table} WHERE id::text = $1"))
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("SELECT {columns} FROM {table}: {e}"))
}

/// Checks a record read from the database: its JSON has the seed's shape,
/// its timestamps are recent, and its JSON reads back as the same JSON.
fn check_read<T>(what: &str, shape: &[Field], record: &T) -> Value
where
    T: DeserializeOwned + Serialize + Debug,
{
    let value = serde_json::to_value(record).unwrap();
    check_shape(what, shape, &value);
    for f in shape.iter().filter(|f| f.kind == Kind::Timestamp && f.name.contains("created_at")) {
        let t: DateTime<Utc> = serde_json::from_value(value[&f.name].clone()).unwrap();
        assert!((Utc::now() - t).num_seconds().abs() < 60, "{what}.{}: the default is now: {t}", f.name);
    }
    let back: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{what}: {e}\n{value:#}"));
    assert_eq!(serde_json::to_value(&back).unwrap(), value, "{what}: JSON round trip of a database row");
    value
}

/// All ten records of [`SeedRows`], read through the select lists, each
/// checked and returned as JSON.
async fn read_all(pool: &PgPool, rows: &SeedRows) -> Vec<(&'static str, Value)> {
    let user: User = read(pool, USER_COLUMNS, "users", &rows.user.to_string()).await;
    let card: TimeCard = read(pool, CARD_COLUMNS, "time_cards", &rows.card.to_string()).await;
    let session: VoiceSession =
        read(pool, VOICE_SESSION_COLUMNS, "voice_sessions", &rows.voice_session.to_string()).await;
    let payment: Payment = read(pool, PAYMENT_COLUMNS, "payment_history", &rows.payment.to_string()).await;
    let tier: PricingTier = read(pool, TIER_COLUMNS, "pricing_tiers", &rows.tier).await;
    let persona: CustomPersona =
        read(pool, CUSTOM_PERSONA_COLUMNS, "custom_personas", &rows.custom_persona.to_string()).await;
    let psession: PersonaSession =
        read(pool, PERSONA_SESSION_COLUMNS, "persona_sessions", &rows.persona_session.to_string()).await;
    let rating: PersonaRating =
        read(pool, PERSONA_RATING_COLUMNS, "persona_ratings", &rows.persona_rating.to_string()).await;
    let sub: Subscription =
        read(pool, SUBSCRIPTION_COLUMNS, "user_subscriptions", &rows.subscription.to_string()).await;
    let ad: AdInteraction =
        read(pool, AD_INTERACTION_COLUMNS, "ad_interactions", &rows.ad_interaction.to_string()).await;

    // What the seed's defaults mean, in the Rust types.
    assert!(user.is_active && !user.email_verified && user.last_login.is_none());
    assert_eq!((card.status, card.remaining_minutes, card.remaining_sub_ms), (CardStatus::Pending, 60, 0));
    assert!(card.activated_at.is_none() && card.expires_at.is_none() && card.stripe_payment_intent_id.is_none());
    assert_eq!((session.status, session.agent_type.as_str()), (SessionStatus::Active, "production"));
    assert!(session.end_time.is_none() && session.duration_seconds.is_none() && session.quality_rating.is_none());
    assert_eq!((payment.currency.as_str(), &payment.time_card_id, &payment.metadata), ("usd", &None, &None));
    assert_eq!((tier.bonus_minutes, tier.description.as_str(), tier.active), (0, "", true));
    assert_eq!((persona.is_active, persona.usage_count, persona.rating), (true, 0, 0.0));
    assert_eq!(persona.config, json!({"tone": "kind"}));
    assert_eq!((psession.cost_multiplier.0, psession.duration_minutes), (Rate::ONE, None));
    assert_eq!(rating.feedback, None);
    assert_eq!(
        (sub.status, sub.cancel_at_period_end, &sub.stripe_subscription_id),
        (SubscriptionStatus::Active, false, &None)
    );
    assert_eq!((ad.completed, ad.interacted, ad.revenue.parse::<f64>().unwrap()), (false, false, 0.0));

    vec![
        ("User", check_read("User", &interface_shape("User", "users"), &user)),
        ("TimeCard", check_read("TimeCard", &interface_shape("TimeCard", "time_cards"), &card)),
        ("VoiceSession", check_read("VoiceSession", &interface_shape("VoiceSession", "voice_sessions"), &session)),
        ("Payment", check_read("Payment", &table_shape("payment_history"), &payment)),
        ("PricingTier", check_read("PricingTier", &interface_shape("PricingTier", "pricing_tiers"), &tier)),
        ("CustomPersona", check_read("CustomPersona", &table_shape("custom_personas"), &persona)),
        ("PersonaSession", check_read("PersonaSession", &table_shape("persona_sessions"), &psession)),
        ("PersonaRating", check_read("PersonaRating", &table_shape("persona_ratings"), &rating)),
        ("Subscription", check_read("Subscription", &interface_shape("Subscription", "user_subscriptions"), &sub)),
        ("AdInteraction", check_read("AdInteraction", &table_shape("ad_interactions"), &ad)),
    ]
}

#[sqlx::test(migrations = "../migrations")]
async fn rows_written_the_seed_way_read_through_the_select_lists(pool: PgPool) {
    let rows = insert_seed_rows(&pool, "defaults").await;
    let read = read_all(&pool, &rows).await;
    assert_eq!(read.len(), 10);
}

/// The seed declares most defaulted columns without NOT NULL, so a seed-era
/// writer may have stored NULL in them; the select lists read such a row as
/// if the default had been taken.
#[sqlx::test(migrations = "../migrations")]
async fn explicit_nulls_in_defaulted_columns_read_as_the_defaults(pool: PgPool) {
    let rows = insert_seed_rows(&pool, "nulls").await;
    let defaults = read_all(&pool, &rows).await;

    let ids = [
        ("users", rows.user.to_string()),
        ("time_cards", rows.card.to_string()),
        ("voice_sessions", rows.voice_session.to_string()),
        ("payment_history", rows.payment.to_string()),
        ("pricing_tiers", rows.tier.clone()),
        ("custom_personas", rows.custom_persona.to_string()),
        ("persona_sessions", rows.persona_session.to_string()),
        ("persona_ratings", rows.persona_rating.to_string()),
        ("user_subscriptions", rows.subscription.to_string()),
        ("ad_interactions", rows.ad_interaction.to_string()),
    ];
    let tables = seed_tables(&read_seed_schema());
    let mut nulled = Vec::new();
    for (table, id) in &ids {
        let t = tables.iter().find(|t| t.name == *table).unwrap();
        let cols: Vec<&str> =
            t.columns.iter().filter(|c| c.nullable() && c.default.is_some()).map(|c| c.name.as_str()).collect();
        assert!(!cols.is_empty(), "{table} has nullable defaulted columns");
        let set = cols.iter().map(|c| format!("{c} = NULL")).collect::<Vec<_>>().join(", ");
        sqlx::query(&format!("UPDATE {table} SET {set} WHERE id::text = $1"))
            .bind(id)
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("the seed allows NULL in {table} ({set}): {e}"));
        nulled.extend(cols.iter().map(|c| format!("{table}.{c}")));
    }
    assert!(nulled.len() >= 25, "{nulled:?}");

    let after = read_all(&pool, &rows).await;
    // The same JSON, but for the timestamps, which read as the time of reading.
    let strip = |v: &Value| {
        let mut v = v.clone();
        for k in ["created_at", "start_time"] {
            v.as_object_mut().unwrap().remove(k);
        }
        v
    };
    for ((name, before), (_, now)) in defaults.iter().zip(&after) {
        assert_eq!(strip(now), strip(before), "{name}: NULLs read as the seed's defaults");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn user_json_never_carries_the_password_hash(pool: PgPool) {
    const HASH: &str = "$argon2id$v=19$m=65536,t=3,p=4$do-not-leak-this-salt$do-not-leak-this-hash";
    let id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO users (email, full_name, password_hash, last_login) \
         VALUES ('grace@example.com', 'Grace Hopper', $1, NOW()) RETURNING id",
    )
    .bind(HASH)
    .fetch_one(&pool)
    .await
    .unwrap();
    let shape = interface_shape("User", "users");

    let through_list: User = read(&pool, USER_COLUMNS, "users", &id.to_string()).await;
    // Even a careless `SELECT *` cannot put the hash into a User.
    let through_star: User = read(&pool, "*", "users", &id.to_string()).await;
    assert_eq!(through_list, through_star);
    for user in [through_list, through_star] {
        let value = check_read("User", &shape, &user);
        assert!(value.get("password_hash").is_none());
        let text = serde_json::to_string(&user).unwrap();
        assert!(!text.contains("password") && !text.contains("do-not-leak"), "{text}");
        assert!(!format!("{user:?}").contains("do-not-leak"), "not in Debug output either");
        assert!(user.last_login.is_some());
    }
    assert!(!USER_COLUMNS.contains("password_hash"));
}

#[sqlx::test(migrations = "../migrations")]
async fn values_set_by_the_application_read_back_exactly(pool: PgPool) {
    let user = insert_user(&pool, "exact@example.com").await;
    let card: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO time_cards (user_id, activation_code, total_minutes, remaining_minutes, remaining_sub_ms, \
                                 activated_at, expires_at, status, stripe_payment_intent_id) \
         VALUES ($1, 'EXACT-1', 120, 7, 1234, NOW(), NOW() + INTERVAL '365 days', 'active', 'pi_exact') RETURNING id",
    )
    .bind(user)
    .fetch_one(&pool)
    .await
    .unwrap();
    let c: TimeCard = read(&pool, CARD_COLUMNS, "time_cards", &card.to_string()).await;
    assert_eq!((c.status, c.remaining_minutes, c.remaining_sub_ms), (CardStatus::Active, 7, 1234));
    let json = check_read("TimeCard", &interface_shape("TimeCard", "time_cards"), &c);
    assert!(json.get("remaining_sub_ms").is_none(), "the exact part stays out of the JSON");

    let payment: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO payment_history (user_id, stripe_payment_intent_id, amount_cents, status, time_card_id, metadata) \
         VALUES ($1, 'pi_exact', 2500, 'succeeded', $2, $3) RETURNING id",
    )
    .bind(user)
    .bind(card)
    .bind(json!({"tier_id": "starter", "n": [1, 2.5, null]}))
    .fetch_one(&pool)
    .await
    .unwrap();
    let p: Payment = read(&pool, PAYMENT_COLUMNS, "payment_history", &payment.to_string()).await;
    assert_eq!(p.time_card_id.map(|c| c.0), Some(card));
    assert_eq!(p.metadata, Some(json!({"tier_id": "starter", "n": [1, 2.5, null]})));
    check_read("Payment", &table_shape("payment_history"), &p);

    let ps: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO persona_sessions (user_id, persona_slug, session_id, cost_multiplier) \
         VALUES ($1, 'professor-ada', 's1', 1.250) RETURNING id",
    )
    .bind(user)
    .fetch_one(&pool)
    .await
    .unwrap();
    let s: PersonaSession = read(&pool, PERSONA_SESSION_COLUMNS, "persona_sessions", &ps.to_string()).await;
    assert_eq!(s.cost_multiplier.0.ms_per_second(), 1250);
    assert_eq!(check_read("PersonaSession", &table_shape("persona_sessions"), &s)["cost_multiplier"], json!(1.25));

    let ad: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO ad_interactions (user_id, ad_id, ad_type, view_duration, completed, revenue) \
         VALUES ($1, 'ad-9', 'banner', 5, TRUE, 0.0125) RETURNING id",
    )
    .bind(user)
    .fetch_one(&pool)
    .await
    .unwrap();
    let a: AdInteraction = read(&pool, AD_INTERACTION_COLUMNS, "ad_interactions", &ad.to_string()).await;
    assert_eq!(a.revenue, "0.0125");
    assert_eq!(check_read("AdInteraction", &table_shape("ad_interactions"), &a)["revenue"], json!(0.0125));
}

/// The column a decoding error is about.
fn decode_error_column(e: sqlx::Error) -> (String, String) {
    match e {
        sqlx::Error::ColumnDecode { index, source } => (index.trim_matches('"').to_string(), source.to_string()),
        other => panic!("expected a column decode error, got {other}"),
    }
}

/// A card's status, or a multiplier, that the Rust types cannot hold is an
/// error about that column when read (never a silently wrong value).
#[sqlx::test(migrations = "../migrations")]
async fn values_the_types_cannot_hold_are_decode_errors(pool: PgPool) {
    let rows = insert_seed_rows(&pool, "undecodable").await;
    for bad in ["1.2345", "0", "-1.5", "NaN"] {
        sqlx::query("UPDATE persona_sessions SET cost_multiplier = $2::numeric WHERE id = $1")
            .bind(rows.persona_session)
            .bind(bad)
            .execute(&pool)
            .await
            .unwrap();
        let e = sqlx::query_as::<_, PersonaSession>(&format!(
            "SELECT {PERSONA_SESSION_COLUMNS} FROM persona_sessions WHERE id = $1"
        ))
        .bind(rows.persona_session)
        .fetch_one(&pool)
        .await
        .expect_err(bad);
        assert_eq!(decode_error_column(e).0, "cost_multiplier", "multiplier {bad}");
    }

    // No seed row can hold an unknown card status (the CHECK), but a select
    // list that produced one would fail on that column.
    let list = CARD_COLUMNS.replace("COALESCE(status, 'pending') AS status", "'paused' AS status");
    assert_ne!(list, CARD_COLUMNS);
    let e = sqlx::query_as::<_, TimeCard>(&format!("SELECT {list} FROM time_cards WHERE id = $1"))
        .bind(rows.card)
        .fetch_one(&pool)
        .await
        .expect_err("paused");
    assert_eq!(decode_error_column(e).0, "status");
}

/// KNOWN BUG (sqlx 0.8.6): `#[derive(FromRow)]` with `#[sqlx(try_from = ...)]`
/// passes the conversion error through `__spec_error!` inside a closure,
/// where the autoderef specialization cannot see the error type, so the
/// message is "unprintable error: (unprintable type)" instead of
/// metering's own error naming the value.
#[sqlx::test(migrations = "../migrations")]
async fn decode_errors_name_the_value(pool: PgPool) {
    let rows = insert_seed_rows(&pool, "named").await;
    update_row(&pool, "UPDATE persona_sessions SET cost_multiplier = 1.2345 WHERE id = $1", rows.persona_session).await;
    let e = sqlx::query_as::<_, PersonaSession>(&format!(
        "SELECT {PERSONA_SESSION_COLUMNS} FROM persona_sessions WHERE id = $1"
    ))
    .bind(rows.persona_session)
    .fetch_one(&pool)
    .await
    .expect_err("four decimals");
    let (_, message) = decode_error_column(e);
    assert!(message.contains("1.2345"), "{message}");

    let list = CARD_COLUMNS.replace("COALESCE(status, 'pending') AS status", "'paused' AS status");
    let e = sqlx::query_as::<_, TimeCard>(&format!("SELECT {list} FROM time_cards WHERE id = $1"))
        .bind(rows.card)
        .fetch_one(&pool)
        .await
        .expect_err("paused");
    let (_, message) = decode_error_column(e);
    assert!(message.contains("paused"), "{message}");
}

/// DECIMAL columns accept `'NaN'` (and, since PostgreSQL 14,
/// `'Infinity'`); `AdInteraction.revenue` and `CustomPersona.rating` read
/// such a value, and serde_json writes a non-finite number as `null`, so the
/// JSON breaks its shape (`revenue` / `rating` are numbers, never null).
#[sqlx::test(migrations = "../migrations")]
async fn non_finite_decimals_never_become_null(pool: PgPool) {
    let rows = insert_seed_rows(&pool, "nan").await;
    update_row(&pool, "UPDATE ad_interactions SET revenue = 'NaN' WHERE id = $1", rows.ad_interaction).await;
    update_row(&pool, "UPDATE custom_personas SET rating = 'NaN' WHERE id = $1", rows.custom_persona).await;
    let ad = sqlx::query_as::<_, AdInteraction>(&format!(
        "SELECT {AD_INTERACTION_COLUMNS} FROM ad_interactions WHERE id = $1"
    ))
    .bind(rows.ad_interaction)
    .fetch_one(&pool)
    .await;
    // Reading or serializing may refuse the value; what must never happen is
    // JSON with `null` where a number belongs.
    if let Ok(json) = ad.map_err(|e| e.to_string()).and_then(|a| serde_json::to_value(&a).map_err(|e| e.to_string())) {
        check_shape("AdInteraction", &table_shape("ad_interactions"), &json);
    }
    let persona = sqlx::query_as::<_, CustomPersona>(&format!(
        "SELECT {CUSTOM_PERSONA_COLUMNS} FROM custom_personas WHERE id = $1"
    ))
    .bind(rows.custom_persona)
    .fetch_one(&pool)
    .await;
    if let Ok(json) =
        persona.map_err(|e| e.to_string()).and_then(|p| serde_json::to_value(&p).map_err(|e| e.to_string()))
    {
        check_shape("CustomPersona", &table_shape("custom_personas"), &json);
    }
}

/// Runs `sql` with `$1 = id`: a test's direct edit of one row.
async fn update_row(pool: &PgPool, sql: &str, id: uuid::Uuid) {
    sqlx::query(sql).bind(id).execute(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}
