//! The seed schema document and rows written its way.
//!
//! - Where the seed schema document is, and a small reader for it: the
//!   `CREATE TABLE` statements of its SQL blocks ([`seed_tables`]) and the
//!   fields of its TypeScript interfaces ([`seed_interfaces`]). The tests
//!   compare the migrated database and the Rust records against these, so the
//!   seed document stays the single source of truth.
//! - Row builders that write the seed's way (only the columns the seed makes
//!   the caller supply, everything else left to its default).

use std::path::PathBuf;

use sqlx::PgPool;
use uuid::Uuid;

/// The seed schema document: `$MINDBOT_SEED_SCHEMA` if set, else
/// `shared/seed/mindbot-data-schema.md` beside the workspace.
pub fn seed_schema_path() -> PathBuf {
    match std::env::var_os("MINDBOT_SEED_SCHEMA") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/seed/mindbot-data-schema.md"),
    }
}

/// The text of the seed schema document (panics naming the path if unreadable).
pub fn read_seed_schema() -> String {
    let path = seed_schema_path();
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the seed schema {}: {e} (set MINDBOT_SEED_SCHEMA)", path.display()))
}

/// One `CREATE TABLE` of the seed.
#[derive(Debug, Clone)]
pub struct SeedTable {
    pub name: String,
    /// The statement exactly as written (without the final `;`).
    pub statement: String,
    pub columns: Vec<SeedColumn>,
}

impl SeedTable {
    /// The column called `name` (panics if the seed has none).
    pub fn column(&self, name: &str) -> &SeedColumn {
        self.columns
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("seed table {} has no column {name}", self.name))
    }
}

/// One column line of a seed `CREATE TABLE`, taken apart.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedColumn {
    pub name: String,
    /// The type as written, upper-cased (`UUID`, `TIMESTAMPTZ`, `DECIMAL`).
    pub sql_type: String,
    pub primary_key: bool,
    pub not_null: bool,
    pub unique: bool,
    /// The `DEFAULT` expression as written.
    pub default: Option<String>,
    pub references: Option<SeedReference>,
    /// The inside of the column's `CHECK (...)`, as written.
    pub check: Option<String>,
}

impl SeedColumn {
    /// Whether the column can hold NULL.
    pub fn nullable(&self) -> bool {
        !self.not_null && !self.primary_key
    }
}

/// A column's `REFERENCES table(column) [ON DELETE action]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedReference {
    pub table: String,
    pub column: String,
    /// Upper-cased (`CASCADE`), `None` when the seed says nothing.
    pub on_delete: Option<String>,
}

/// A TypeScript interface of the seed: its top-level fields and their types
/// as written (`string | null`, `'active' | 'completed'`).
#[derive(Debug, Clone)]
pub struct SeedInterface {
    pub name: String,
    pub fields: Vec<(String, String)>,
}

impl SeedInterface {
    pub fn field_names(&self) -> Vec<&str> {
        self.fields.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// Every `CREATE TABLE` in the ```` ```sql ```` blocks of the seed document,
/// in document order. Panics on anything it does not understand (a table
/// constraint, an unbalanced parenthesis), so a changed seed is noticed.
pub fn seed_tables(doc: &str) -> Vec<SeedTable> {
    fenced_blocks(doc, "sql").iter().flat_map(|b| parse_sql_block(b)).collect()
}

/// Every `interface` in the ```` ```typescript ```` blocks of the seed
/// document. Nested object types (`voice: { ... }`) count as one field.
pub fn seed_interfaces(doc: &str) -> Vec<SeedInterface> {
    let mut out = Vec::new();
    for block in fenced_blocks(doc, "typescript") {
        let mut current: Option<SeedInterface> = None;
        let mut depth = 0usize;
        for raw in block.lines() {
            let line = raw.split("//").next().unwrap_or("").trim();
            if let Some(rest) = line.strip_prefix("interface ") {
                let name = rest.trim_end_matches('{').trim().to_string();
                current = Some(SeedInterface { name, fields: Vec::new() });
                depth = 1;
                continue;
            }
            let Some(iface) = current.as_mut() else { continue };
            if depth == 1 {
                if let Some((name, ty)) = line.split_once(':') {
                    let ty = ty.trim().trim_end_matches(';').trim();
                    iface.fields.push((name.trim().to_string(), ty.to_string()));
                }
            }
            depth += line.matches('{').count();
            depth -= line.matches('}').count().min(depth);
            if depth == 0 {
                out.extend(current.take());
            }
        }
    }
    out
}

/// Inserts a user the seed's way (email, name and password hash; everything
/// else defaulted) and returns its id.
pub async fn insert_user(pool: &PgPool, email: &str) -> Uuid {
    sqlx::query_scalar!(
        "INSERT INTO users (email, full_name, password_hash) VALUES ($1, $2, $3) RETURNING id",
        email,
        format!("Test user {email}"),
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"
    )
    .fetch_one(pool)
    .await
    .unwrap_or_else(|e| panic!("insert user {email}: {e}"))
}

/// Inserts a time card the seed's way (owner, code, total and remaining
/// minutes; status, timestamps and the sub-minute balance defaulted).
pub async fn insert_card(pool: &PgPool, user: Uuid, code: &str, minutes: i32) -> Uuid {
    sqlx::query_scalar!(
        "INSERT INTO time_cards (user_id, activation_code, total_minutes, remaining_minutes)
         VALUES ($1, $2, $3, $3) RETURNING id",
        user,
        code,
        minutes
    )
    .fetch_one(pool)
    .await
    .unwrap_or_else(|e| panic!("insert card {code}: {e}"))
}

/// One row in each table of the seed, written the seed's way: only the
/// columns the seed makes a caller supply (NOT NULL without a default), the
/// rest left to their defaults or NULL.
#[derive(Debug, Clone)]
pub struct SeedRows {
    pub user: Uuid,
    pub card: Uuid,
    pub voice_session: Uuid,
    pub payment: Uuid,
    pub tier: String,
    pub custom_persona: Uuid,
    pub persona_session: Uuid,
    pub persona_rating: Uuid,
    pub subscription: Uuid,
    pub ad_interaction: Uuid,
}

/// Inserts [`SeedRows`] for a new user; `tag` keeps the unique columns
/// (email, activation code, payment intent, tier id, persona slug) apart.
pub async fn insert_seed_rows(pool: &PgPool, tag: &str) -> SeedRows {
    let user = insert_user(pool, &format!("{tag}@example.com")).await;
    let card = insert_card(pool, user, &format!("CODE-{tag}"), 60).await;
    let voice_session = insert_owned(
        pool,
        "INSERT INTO voice_sessions (user_id, session_id, room_name) VALUES ($1, $2, $3) RETURNING id",
        user,
        &[&format!("sess-{tag}"), &format!("room-{tag}")],
    )
    .await;
    let payment = insert_owned(
        pool,
        "INSERT INTO payment_history (user_id, stripe_payment_intent_id, amount_cents, status) \
         VALUES ($1, $2, 1999, 'succeeded') RETURNING id",
        user,
        &[&format!("pi_{tag}")],
    )
    .await;
    let tier = format!("tier-{tag}");
    sqlx::query!("INSERT INTO pricing_tiers (id, name, hours, price_cents) VALUES ($1, 'Starter', 1, 999)", &tier)
        .execute(pool)
        .await
        .expect("insert pricing tier");
    let custom_persona = insert_owned(
        pool,
        "INSERT INTO custom_personas (user_id, slug, name, config, system_prompt) \
         VALUES ($1, $2, 'Tutor', '{\"tone\": \"kind\"}', 'You are a patient tutor.') RETURNING id",
        user,
        &[&format!("tutor-{tag}")],
    )
    .await;
    let persona_session = insert_owned(
        pool,
        "INSERT INTO persona_sessions (user_id, persona_slug, session_id) VALUES ($1, 'tutor', $2) RETURNING id",
        user,
        &[&format!("sess-{tag}")],
    )
    .await;
    let persona_rating = insert_owned(
        pool,
        "INSERT INTO persona_ratings (user_id, persona_slug, rating) VALUES ($1, 'tutor', 4) RETURNING id",
        user,
        &[],
    )
    .await;
    let subscription = insert_owned(
        pool,
        "INSERT INTO user_subscriptions (user_id, plan_id, status, current_period_start, current_period_end) \
         VALUES ($1, 'monthly', 'active', NOW(), NOW() + INTERVAL '30 days') RETURNING id",
        user,
        &[],
    )
    .await;
    let ad_interaction = insert_owned(
        pool,
        "INSERT INTO ad_interactions (user_id, ad_id, ad_type, view_duration) VALUES ($1, 'ad-1', 'video', 30) \
         RETURNING id",
        user,
        &[],
    )
    .await;
    SeedRows {
        user,
        card,
        voice_session,
        payment,
        tier,
        custom_persona,
        persona_session,
        persona_rating,
        subscription,
        ad_interaction,
    }
}

/// Runs an `INSERT ... RETURNING id` whose `$1` is the owner and `$2...`
/// are `texts`.
async fn insert_owned(pool: &PgPool, sql: &str, owner: Uuid, texts: &[&str]) -> Uuid {
    // Dynamic: one helper for the seed's tables, so the statement is an argument.
    let mut query = sqlx::query_scalar(sql).bind(owner);
    for t in texts {
        query = query.bind(*t);
    }
    query.fetch_one(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The bodies of the fenced blocks tagged `lang`.
fn fenced_blocks(doc: &str, lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        let fence = line.trim_start().strip_prefix("```").map(str::trim);
        match (fence, current.as_mut()) {
            (Some(_), Some(_)) => blocks.extend(current.take()),
            (Some(tag), None) if tag.eq_ignore_ascii_case(lang) => current = Some(String::new()),
            (None, Some(body)) => {
                body.push_str(line);
                body.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

/// A lexical token of SQL, with its byte range in the source.
#[derive(Debug, Clone)]
struct Token {
    text: String,
    start: usize,
    end: usize,
}

impl Token {
    fn is(&self, word: &str) -> bool {
        self.text.eq_ignore_ascii_case(word)
    }
}

/// Words (identifiers, keywords, numbers), quoted strings and single
/// punctuation characters; `--` comments are dropped.
fn tokenize(sql: &str) -> Vec<Token> {
    let bytes = sql.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        } else if sql[i..].starts_with("--") {
            i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n);
            continue;
        } else if c == b'\'' {
            i += 1;
            while i < bytes.len() && (bytes[i] != b'\'' || bytes.get(i + 1) == Some(&b'\'')) {
                i += if bytes[i] == b'\'' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.') {
                i += 1;
            }
        } else {
            i += 1;
        }
        let end = i.min(bytes.len());
        tokens.push(Token { text: sql[start..end].to_string(), start, end });
    }
    tokens
}

/// Index of the `)` closing the `(` at `open`.
fn closing_paren(tokens: &[Token], open: usize) -> usize {
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        match t.text.as_str() {
            "(" => depth += 1,
            ")" => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced parenthesis in the seed SQL near {:?}", tokens[open].text)
}

fn parse_sql_block(sql: &str) -> Vec<SeedTable> {
    let tokens = tokenize(sql);
    let mut tables = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if !(tokens[i].is("CREATE") && tokens.get(i + 1).is_some_and(|t| t.is("TABLE"))) {
            i += 1;
            continue;
        }
        let mut j = i + 2;
        if tokens[j].is("IF") {
            j += 3; // IF NOT EXISTS
        }
        let name = tokens[j].text.to_lowercase();
        let open = j + 1;
        assert_eq!(tokens[open].text, "(", "CREATE TABLE {name}: expected '('");
        let close = closing_paren(&tokens, open);
        let statement = sql[tokens[i].start..tokens[close].end].to_string();
        let columns =
            split_top_level(&tokens[open + 1..close]).into_iter().map(|def| parse_column(sql, &name, def)).collect();
        tables.push(SeedTable { name, statement, columns });
        i = close + 1;
    }
    tables
}

/// Splits a table body at the commas outside parentheses.
fn split_top_level(tokens: &[Token]) -> Vec<&[Token]> {
    let mut parts = Vec::new();
    let (mut depth, mut from) = (0usize, 0usize);
    for (i, t) in tokens.iter().enumerate() {
        match t.text.as_str() {
            "(" => depth += 1,
            ")" => depth -= 1,
            "," if depth == 0 => {
                parts.push(&tokens[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    if from < tokens.len() {
        parts.push(&tokens[from..]);
    }
    parts
}

const COLUMN_KEYWORDS: &[&str] = &["PRIMARY", "NOT", "NULL", "DEFAULT", "UNIQUE", "REFERENCES", "CHECK", "CONSTRAINT"];

fn is_column_keyword(t: &Token) -> bool {
    COLUMN_KEYWORDS.iter().any(|k| t.is(k))
}

fn parse_column(sql: &str, table: &str, def: &[Token]) -> SeedColumn {
    let text = |from: &Token, to: &Token| sql[from.start..to.end].to_string();
    let name = def[0].text.to_lowercase();
    assert!(
        !["PRIMARY", "UNIQUE", "CONSTRAINT", "FOREIGN", "CHECK"].iter().any(|k| def[0].is(k)),
        "seed table {table}: table constraints are not supported by this reader: {}",
        text(&def[0], def.last().unwrap())
    );
    let mut i = 1;
    while i < def.len() && !is_column_keyword(&def[i]) {
        i += if def[i].text == "(" { closing_paren(def, i) - i + 1 } else { 1 };
    }
    assert!(i > 1, "seed column {table}.{name} has no type");
    let mut col = SeedColumn {
        name,
        sql_type: text(&def[1], &def[i - 1]).to_uppercase(),
        primary_key: false,
        not_null: false,
        unique: false,
        default: None,
        references: None,
        check: None,
    };
    while i < def.len() {
        let t = &def[i];
        if t.is("PRIMARY") && def[i + 1].is("KEY") {
            col.primary_key = true;
            i += 2;
        } else if t.is("NOT") && def[i + 1].is("NULL") {
            col.not_null = true;
            i += 2;
        } else if t.is("NULL") {
            i += 1;
        } else if t.is("UNIQUE") {
            col.unique = true;
            i += 1;
        } else if t.is("DEFAULT") {
            let from = i + 1;
            let mut j = from;
            while j < def.len() && !is_column_keyword(&def[j]) {
                j += if def[j].text == "(" { closing_paren(def, j) - j + 1 } else { 1 };
            }
            // A bare keyword default (`DEFAULT NULL`) is one token.
            let j = j.max(from + 1);
            col.default = Some(text(&def[from], &def[j - 1]));
            i = j;
        } else if t.is("CHECK") {
            let close = closing_paren(def, i + 1);
            col.check = Some(text(&def[i + 2], &def[close - 1]));
            i = close + 1;
        } else if t.is("REFERENCES") {
            let table = def[i + 1].text.to_lowercase();
            assert_eq!(def[i + 2].text, "(", "{table}.{}: REFERENCES without a column", col.name);
            let column = def[i + 3].text.to_lowercase();
            i += 5;
            let mut on_delete = None;
            while i + 2 < def.len() && def[i].is("ON") {
                let action_len = if def[i + 2].is("SET") || def[i + 2].is("NO") { 2 } else { 1 };
                let action = text(&def[i + 2], &def[i + 1 + action_len]).to_uppercase();
                if def[i + 1].is("DELETE") {
                    on_delete = Some(action);
                }
                i += 2 + action_len;
            }
            col.references = Some(SeedReference { table, column, on_delete });
        } else {
            panic!("seed column {table}.{}: cannot read {:?}", col.name, t.text);
        }
    }
    col
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_column_line_apart() {
        let sql = "CREATE TABLE t (\n  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),\n  \
                   u UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE, -- owner\n  \
                   s TEXT DEFAULT 'a,b' CHECK (s IN ('a,b', 'c')),\n  n NUMERIC(10, 2) UNIQUE\n);";
        let t = &parse_sql_block(sql)[0];
        assert_eq!(t.name, "t");
        assert_eq!(t.columns.len(), 4);
        assert!(t.column("id").primary_key && !t.column("id").nullable());
        assert_eq!(t.column("id").default.as_deref(), Some("gen_random_uuid()"));
        let r = t.column("u").references.clone().unwrap();
        assert_eq!((r.table.as_str(), r.column.as_str(), r.on_delete.as_deref()), ("users", "id", Some("CASCADE")));
        assert_eq!(t.column("s").default.as_deref(), Some("'a,b'"));
        assert_eq!(t.column("s").check.as_deref(), Some("s IN ('a,b', 'c')"));
        assert_eq!(t.column("n").sql_type, "NUMERIC(10, 2)");
        assert!(t.column("n").unique && t.column("n").nullable());
    }

    #[test]
    fn reads_interfaces_with_nested_objects() {
        let doc = "```typescript\ninterface A {\n  // c\n  x: string;\n  v: {\n    y: number;\n  };\n  z: 'p' | 'q' | null;\n}\n```\n";
        let i = &seed_interfaces(doc)[0];
        assert_eq!(i.name, "A");
        assert_eq!(i.field_names(), ["x", "v", "z"]);
        assert_eq!(i.fields[2].1, "'p' | 'q' | null");
    }
}
