//! The migrated database keeps the seed schema exactly.
//!
//! The seed document is read at test time; every `CREATE TABLE` in it is
//! taken apart column by column and compared with what the migrations built:
//! `information_schema.columns` (name, order, type, nullability, default) and
//! `pg_constraint` (primary keys, UNIQUE, foreign keys and their ON DELETE,
//! CHECK clauses). To compare expressions the way PostgreSQL stores them, the
//! seed's statements are also run verbatim in a scratch schema (`seed_probe`)
//! of the same test database and the two catalogs compared entry by entry.
//! Whatever the later migrations add to a seed table must be nullable or
//! defaulted and must not constrain a seed column.

use std::collections::BTreeSet;

use metering::money::Millis;
use metering::records::{TimeCard, CARD_COLUMNS};
use mindbot_tests::{insert_card, insert_seed_rows, insert_user, read_seed_schema, seed_tables, SeedColumn, SeedTable};
use sqlx::PgPool;

/// The ten tables of the seed, in the order the document gives them.
const SEED_TABLES: [(&str, usize); 10] = [
    ("users", 8),
    ("time_cards", 10),
    ("voice_sessions", 11),
    ("payment_history", 9),
    ("pricing_tiers", 8),
    ("custom_personas", 10),
    ("persona_sessions", 7),
    ("persona_ratings", 6),
    ("user_subscriptions", 9),
    ("ad_interactions", 9),
];

/// Scratch schema the seed's own statements are run in.
const PROBE: &str = "seed_probe";

fn seed() -> Vec<SeedTable> {
    seed_tables(&read_seed_schema())
}

/// `information_schema.columns.data_type` of a type as the seed spells it.
fn information_schema_type(seed_type: &str) -> &'static str {
    match seed_type {
        "UUID" => "uuid",
        "TEXT" => "text",
        "INTEGER" | "INT" | "INT4" => "integer",
        "BIGINT" | "INT8" => "bigint",
        "BOOLEAN" | "BOOL" => "boolean",
        "TIMESTAMPTZ" => "timestamp with time zone",
        "JSONB" => "jsonb",
        "DECIMAL" | "NUMERIC" => "numeric",
        other => panic!("the seed uses type {other}, which this test does not map yet"),
    }
}

/// A default expression, compared loosely: keywords lower-cased (outside
/// string literals) and a cast to the column's own type dropped, so the
/// seed's `'pending'` and `NOW()` match PostgreSQL's `'pending'::text` and
/// `now()`.
fn normalize_default(expr: &str, data_type: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    for c in expr.trim().chars() {
        if c == '\'' {
            quoted = !quoted;
        }
        out.push(if quoted { c } else { c.to_ascii_lowercase() });
    }
    match out.strip_suffix(&format!("::{data_type}")) {
        Some(bare) => bare.to_string(),
        None => out,
    }
}

/// The literals (quoted strings and numbers) of an SQL expression.
fn literals(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find(|c: char| c == '\'' || c.is_ascii_digit()) {
        let tail = &rest[i..];
        let len = if let Some(s) = tail.strip_prefix('\'') {
            s.find('\'').map_or(tail.len(), |n| n + 2)
        } else {
            tail.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(tail.len())
        };
        out.push(tail[..len].to_string());
        rest = &tail[len..];
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, sqlx::FromRow)]
struct DbColumn {
    name: String,
    data_type: String,
    nullable: bool,
    default: Option<String>,
}

async fn columns(pool: &PgPool, schema: &str, table: &str) -> Vec<DbColumn> {
    sqlx::query_as(
        "SELECT column_name::text AS name, data_type::text AS data_type, is_nullable = 'YES' AS nullable, \
                column_default::text AS default \
         FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap_or_else(|e| panic!("columns of {schema}.{table}: {e}"))
}

/// A row of `pg_constraint`, with column numbers turned into names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, sqlx::FromRow)]
struct DbConstraint {
    /// `p`, `u`, `f`, `c` (and `n`, `x` where they exist).
    kind: String,
    name: String,
    columns: Vec<String>,
    ref_table: Option<String>,
    ref_columns: Vec<String>,
    /// `confdeltype`: `c` cascade, `a` no action, ... (blank when not a FK).
    on_delete: String,
    on_update: String,
    /// `pg_get_constraintdef`, with the probe schema's qualification removed.
    definition: String,
}

async fn constraints(pool: &PgPool, schema: &str, table: &str) -> Vec<DbConstraint> {
    let mut found: Vec<DbConstraint> = sqlx::query_as(
        "SELECT c.contype::text AS kind, c.conname::text AS name,
                ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(num, pos)
                      JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num ORDER BY k.pos) AS columns,
                f.relname::text AS ref_table,
                ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k(num, pos)
                      JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.num ORDER BY k.pos) AS ref_columns,
                c.confdeltype::text AS on_delete, c.confupdtype::text AS on_update,
                pg_get_constraintdef(c.oid) AS definition
         FROM pg_constraint c
         JOIN pg_class t ON t.oid = c.conrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         LEFT JOIN pg_class f ON f.oid = c.confrelid
         WHERE n.nspname = $1 AND t.relname = $2",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap_or_else(|e| panic!("constraints of {schema}.{table}: {e}"));
    for c in &mut found {
        c.definition = c.definition.replace(&format!("{PROBE}."), "");
    }
    found.sort();
    found
}

/// Runs the seed's `CREATE TABLE` statements, as written, in [`PROBE`].
async fn create_probe(pool: &PgPool, tables: &[SeedTable]) {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query(&format!("CREATE SCHEMA {PROBE}")).execute(&mut *tx).await.expect("create probe schema");
    sqlx::query(&format!("SET LOCAL search_path TO {PROBE}")).execute(&mut *tx).await.expect("search_path");
    for t in tables {
        sqlx::query(&t.statement)
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("the seed's own CREATE TABLE {} fails: {e}", t.name));
    }
    tx.commit().await.expect("commit probe");
}

fn seed_column_names(t: &SeedTable) -> Vec<&str> {
    t.columns.iter().map(|c| c.name.as_str()).collect()
}

/// `pg_constraint.confdeltype` for a seed `ON DELETE` action.
fn delete_code(action: Option<&str>) -> &'static str {
    match action {
        None | Some("NO ACTION") => "a",
        Some("CASCADE") => "c",
        Some("RESTRICT") => "r",
        Some("SET NULL") => "n",
        Some("SET DEFAULT") => "d",
        Some(other) => panic!("unknown ON DELETE action {other}"),
    }
}

#[test]
fn the_seed_document_reads_as_its_ten_tables() {
    let tables = seed();
    let names: Vec<(&str, usize)> = tables.iter().map(|t| (t.name.as_str(), t.columns.len())).collect();
    assert_eq!(names, SEED_TABLES, "tables and column counts read from the seed document");
    for t in &tables {
        let pk: Vec<&SeedColumn> = t.columns.iter().filter(|c| c.primary_key).collect();
        assert_eq!(pk.len(), 1, "{}: one primary key column", t.name);
        assert_eq!(pk[0].name, "id", "{}: the primary key is id", t.name);
        if t.name != "users" && t.name != "pricing_tiers" {
            let owner = t.column("user_id");
            let r = owner.references.as_ref().unwrap_or_else(|| panic!("{}.user_id references users", t.name));
            assert_eq!((r.table.as_str(), r.column.as_str(), r.on_delete.as_deref()), ("users", "id", Some("CASCADE")));
            assert!(owner.not_null, "{}.user_id is NOT NULL", t.name);
        }
    }
    let status = tables[1].column("status");
    assert_eq!(status.default.as_deref(), Some("'pending'"));
    assert_eq!(status.check.as_deref(), Some("status IN ('pending', 'active', 'expired', 'used', 'refunded')"));
}

#[test]
fn migration_0001_is_the_seed_verbatim() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/0001_seed_schema.sql");
    let sql = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let migrated = seed_tables(&format!("```sql\n{sql}\n```\n"));
    let seed = seed();
    assert_eq!(migrated.len(), seed.len(), "0001 creates the seed's tables and no others");
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    for (m, s) in migrated.iter().zip(&seed) {
        assert_eq!(m.name, s.name);
        assert_eq!(m.columns, s.columns, "{}: columns as written", s.name);
        assert_eq!(squash(&m.statement), squash(&s.statement), "{}: statement text", s.name);
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn every_seed_column_is_present_exactly(pool: PgPool) {
    let tables = seed();
    create_probe(&pool, &tables).await;
    for t in &tables {
        let actual = columns(&pool, "public", &t.name).await;
        let probe = columns(&pool, PROBE, &t.name).await;
        let seed_names = seed_column_names(t);
        let probe_names: Vec<&str> = probe.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            probe_names, seed_names,
            "{}: PostgreSQL reads the seed's statement as the columns read here",
            t.name
        );
        let actual_names: Vec<&str> = actual.iter().map(|c| c.name.as_str()).collect();
        assert!(
            actual_names.len() >= seed_names.len() && actual_names[..seed_names.len()] == seed_names[..],
            "{}: the seed's columns come first, in the seed's order: {actual_names:?}",
            t.name
        );

        for (seed_col, (db, probe_col)) in t.columns.iter().zip(actual.iter().zip(&probe)) {
            let what = format!("{}.{}", t.name, seed_col.name);
            assert_eq!(db, probe_col, "{what}: as the seed's own statement makes it");
            assert_eq!(db.data_type, information_schema_type(&seed_col.sql_type), "{what}: type");
            assert_eq!(db.nullable, seed_col.nullable(), "{what}: nullability");
            assert_eq!(
                db.default.as_deref().map(|d| normalize_default(d, &db.data_type)),
                seed_col.default.as_deref().map(|d| normalize_default(d, &db.data_type)),
                "{what}: default expression"
            );
        }

        for added in &actual[seed_names.len()..] {
            assert!(
                added.nullable || added.default.is_some(),
                "{}.{} was added NOT NULL without a default: an insert written for the seed would fail",
                t.name,
                added.name
            );
        }
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn every_seed_constraint_is_present_exactly(pool: PgPool) {
    let tables = seed();
    create_probe(&pool, &tables).await;
    for t in &tables {
        let seed_names: BTreeSet<&str> = seed_column_names(t).into_iter().collect();
        let on_seed = |c: &DbConstraint| c.columns.iter().all(|n| seed_names.contains(n.as_str()));
        let actual = constraints(&pool, "public", &t.name).await;
        let probe = constraints(&pool, PROBE, &t.name).await;
        let (actual_seed, added): (Vec<DbConstraint>, Vec<DbConstraint>) = actual.into_iter().partition(on_seed);

        // The same constraints, names and definitions as the seed's statement makes.
        assert_eq!(actual_seed, probe, "{}: constraints on the seed's columns", t.name);
        for c in &added {
            assert!(
                c.columns.iter().all(|n| !seed_names.contains(n.as_str())),
                "{}: constraint {} added by a later migration involves a seed column: {}",
                t.name,
                c.name,
                c.definition
            );
        }

        // And each of them is what the seed's column lines say.
        let find = |kind: &str, column: &str| {
            actual_seed
                .iter()
                .find(|c| c.kind == kind && c.columns == [column])
                .unwrap_or_else(|| panic!("{}.{column}: no constraint of kind {kind}: {actual_seed:#?}", t.name))
        };
        let mut expected = 0;
        for col in &t.columns {
            let what = format!("{}.{}", t.name, col.name);
            if col.primary_key {
                expected += 1;
                assert_eq!(find("p", &col.name).name, format!("{}_pkey", t.name), "{what}: primary key");
            }
            if col.unique {
                expected += 1;
                find("u", &col.name);
            }
            if let Some(r) = &col.references {
                expected += 1;
                let fk = find("f", &col.name);
                assert_eq!(fk.ref_table.as_deref(), Some(r.table.as_str()), "{what}: referenced table");
                assert_eq!(fk.ref_columns, [r.column.as_str()], "{what}: referenced column");
                assert_eq!(fk.on_delete, delete_code(r.on_delete.as_deref()), "{what}: ON DELETE");
                assert_eq!(fk.on_update, "a", "{what}: ON UPDATE");
            }
            if let Some(check) = &col.check {
                expected += 1;
                let c = find("c", &col.name);
                for lit in literals(check) {
                    assert!(c.definition.contains(&lit), "{what}: CHECK {} lacks the seed's {lit}", c.definition);
                }
            }
        }
        let keys = actual_seed.iter().filter(|c| ["p", "u", "f", "c"].contains(&c.kind.as_str())).count();
        assert_eq!(keys, expected, "{}: no other key, foreign key or CHECK on seed columns: {actual_seed:#?}", t.name);
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn deleting_a_user_cascades_to_every_owned_row(pool: PgPool) {
    let rows = insert_seed_rows(&pool, "cascade").await;
    let keep = insert_seed_rows(&pool, "keep").await;
    sqlx::query("DELETE FROM users WHERE id = $1").bind(rows.user).execute(&pool).await.expect("delete user");
    for (table, _) in SEED_TABLES.iter().filter(|(t, _)| *t != "users" && *t != "pricing_tiers") {
        let pool = &pool;
        let count = |user: uuid::Uuid| async move {
            let sql = format!("SELECT count(*) FROM {table} WHERE user_id = $1");
            sqlx::query_scalar::<_, i64>(&sql).bind(user).fetch_one(pool).await.expect("count")
        };
        assert_eq!(count(rows.user).await, 0, "{table}: the deleted user's rows are gone");
        assert_eq!(count(keep.user).await, 1, "{table}: another user's rows stay");
    }
}

fn db_error(e: sqlx::Error) -> (String, Option<String>) {
    match e {
        sqlx::Error::Database(d) => (d.code().unwrap_or_default().into_owned(), d.constraint().map(str::to_string)),
        other => panic!("expected a database error, got {other}"),
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn remaining_minutes_stays_the_floor_of_the_exact_balance(pool: PgPool) {
    let user = insert_user(&pool, "floor@example.com").await;
    let card = insert_card(&pool, user, "FLOOR-1", 90).await;
    let read = || async {
        sqlx::query_as::<_, TimeCard>(&format!("SELECT {CARD_COLUMNS} FROM time_cards WHERE id = $1"))
            .bind(card)
            .fetch_one(&pool)
            .await
            .expect("read card")
    };

    // Written the seed's way, the card's exact balance is its whole minutes.
    let fresh = read().await;
    assert_eq!(fresh.remaining_sub_ms, 0, "a row inserted without remaining_sub_ms has none");
    assert_eq!(fresh.balance(), Millis::from_minutes(90));

    let set = |sub: Option<i32>| {
        sqlx::query("UPDATE time_cards SET remaining_sub_ms = $2 WHERE id = $1").bind(card).bind(sub).execute(&pool)
    };
    for sub in [0, 1, 30_000, 59_999] {
        set(Some(sub)).await.unwrap_or_else(|e| panic!("remaining_sub_ms {sub} is in range: {e}"));
        let c = read().await;
        assert_eq!(c.balance().to_parts(), (90, i64::from(sub)));
        assert_eq!(c.balance().whole_minutes_floor(), i64::from(c.remaining_minutes), "remaining_minutes is the floor");
    }

    for sub in [-1, 60_000, 60_001, i32::MAX, i32::MIN] {
        let err = set(Some(sub)).await.expect_err("out of range");
        assert_eq!(
            db_error(err),
            ("23514".to_string(), Some("time_cards_remaining_sub_ms_range".to_string())),
            "remaining_sub_ms {sub} is refused by the range CHECK"
        );
    }
    assert_eq!(db_error(set(None).await.expect_err("NULL")).0, "23502", "remaining_sub_ms is NOT NULL");
    assert_eq!(read().await.remaining_sub_ms, 59_999, "refused updates change nothing");

    let err = sqlx::query(
        "INSERT INTO time_cards (user_id, activation_code, total_minutes, remaining_minutes, remaining_sub_ms) \
         VALUES ($1, 'FLOOR-2', 1, 0, 60000)",
    )
    .bind(user)
    .execute(&pool)
    .await
    .expect_err("a full minute in remaining_sub_ms");
    assert_eq!(db_error(err).1.as_deref(), Some("time_cards_remaining_sub_ms_range"));

    // Whatever is stored, the whole minutes of the exact balance are remaining_minutes.
    let broken: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM time_cards \
         WHERE floor((remaining_minutes::numeric * 60000 + remaining_sub_ms) / 60000) <> remaining_minutes",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(broken, 0);
}

/// Everything the migrations leave behind: tables, columns, indexes,
/// constraints, the migration log and the rows the migrations insert.
async fn schema_snapshot(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT 'column ' || table_name::text || '.' || column_name::text || ' ' || data_type::text || ' '
                || is_nullable::text || ' ' || COALESCE(column_default::text, '')
         FROM information_schema.columns WHERE table_schema = 'public'
         UNION ALL SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
         UNION ALL SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname::text || ' ' || pg_get_constraintdef(oid)
         FROM pg_constraint WHERE connamespace = 'public'::regnamespace
         UNION ALL SELECT 'migration ' || version || ' ' || success || ' ' || encode(checksum, 'hex') || ' ' || installed_on
         FROM _sqlx_migrations
         UNION ALL SELECT 'user ' || id || ' ' || email FROM users
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("snapshot")
}

async fn assert_all_migrations_applied(pool: &PgPool) {
    let applied: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version").fetch_all(pool).await.unwrap();
    let known: Vec<(i64, bool)> = metering::MIGRATOR.iter().map(|m| (m.version, true)).collect();
    assert!(!known.is_empty());
    assert_eq!(applied, known, "every migration applied once, successfully");
}

#[sqlx::test(migrations = "../migrations")]
async fn running_the_migrator_again_is_a_no_op(pool: PgPool) {
    let before = schema_snapshot(&pool).await;
    assert_all_migrations_applied(&pool).await;
    for _ in 0..2 {
        metering::MIGRATOR.run(&pool).await.expect("the embedded migrator accepts an already migrated database");
        assert_eq!(schema_snapshot(&pool).await, before, "a second run changes nothing");
    }
}

#[sqlx::test(migrations = false)]
async fn an_empty_database_migrates_and_migrates_again(pool: PgPool) {
    metering::MIGRATOR.run(&pool).await.expect("first run");
    assert_all_migrations_applied(&pool).await;
    let first = schema_snapshot(&pool).await;
    let users: Vec<String> = first.iter().filter(|l| l.starts_with("user ")).cloned().collect();
    assert_eq!(users.len(), 1, "the migrations insert only the unclaimed-cards owner: {users:?}");
    metering::MIGRATOR.run(&pool).await.expect("second run");
    assert_eq!(schema_snapshot(&pool).await, first, "a second run changes nothing");
}
