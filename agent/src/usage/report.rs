//! `mindbot-agent usage --since <date>`: what each persona earns against
//! what its providers cost. Per session: the billed seconds and the card
//! time the meter charged, the revenue of that card time (a card's share of
//! the payment that bought it: cards issued without a payment earn nothing
//! here), each stage's provider usage and its cost at `[voice.prices]`; then
//! the same summed per persona. Read-only, exact integers throughout.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::{currency_text, of_sessions, Counters, Prices, StageUsage};

/// Why `--since` was refused.
#[derive(Debug, thiserror::Error)]
#[error("--since: expected a date (YYYY-MM-DD, UTC) or an RFC 3339 time such as 2026-12-01T09:00:00Z, got {value:?}")]
pub struct BadSince {
    pub value: String,
}

/// `--since` as a date (midnight UTC) or an RFC 3339 instant.
pub fn parse_since(value: &str) -> Result<DateTime<Utc>, BadSince> {
    let v = value.trim();
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    DateTime::parse_from_rfc3339(v).map(|t| t.with_timezone(&Utc)).map_err(|_| BadSince { value: value.to_string() })
}

/// A session as `voice_sessions` has it.
struct SessionRow {
    id: Uuid,
    persona_slug: Option<String>,
    start_time: Option<DateTime<Utc>>,
    metered_ms: i64,
    charged_ms: i64,
}

/// One session's line of the report.
#[derive(Debug, Default)]
struct SessionLine {
    id: Uuid,
    persona: String,
    start: Option<DateTime<Utc>>,
    metered_ms: i64,
    charged_ms: i64,
    revenue_nanos: u128,
    usage: Vec<StageUsage>,
}

/// A persona's sums.
#[derive(Debug, Default)]
struct PersonaSum {
    sessions: u64,
    metered_ms: i64,
    charged_ms: i64,
    revenue_nanos: u128,
    cost_nanos: u128,
    usage: Counters,
    /// By (stage, provider).
    providers: BTreeMap<(String, String), Counters>,
}

/// The report's text, for sessions started at or after `since`; prices
/// and revenue are in `currency`.
pub async fn report(pool: &PgPool, since: DateTime<Utc>, prices: &Prices, currency: &str) -> sqlx::Result<String> {
    let rows = sqlx::query_as!(
        SessionRow,
        "SELECT id, persona_slug, start_time, metered_ms, charged_ms FROM voice_sessions
         WHERE start_time >= $1 ORDER BY persona_slug NULLS LAST, start_time, id",
        since
    )
    .fetch_all(pool)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    // A charge's revenue: charged_ms of a card bought for amount_cents with
    // total_minutes, in nano-units (1 cent = 10^7), rounded down per charge.
    let revenue = sqlx::query!(
        r#"SELECT cc.voice_session_id AS "session!",
                SUM(div(cc.charged_ms::numeric * ph.amount_cents * 10000000, tc.total_minutes::numeric * 60000))::text
                    AS "nanos!"
           FROM card_charges cc
           JOIN time_cards tc ON tc.id = cc.time_card_id
           JOIN payment_history ph ON ph.time_card_id = tc.id
           WHERE cc.voice_session_id = ANY($1) AND tc.total_minutes > 0 AND ph.amount_cents > 0
           GROUP BY cc.voice_session_id"#,
        &ids
    )
    .fetch_all(pool)
    .await?;
    let revenue: BTreeMap<Uuid, u128> = revenue
        .into_iter()
        .map(|r| (r.session, r.nanos.split('.').next().unwrap_or("0").parse().unwrap_or(0)))
        .collect();
    let mut usage = of_sessions(pool, &ids).await?;
    let lines: Vec<SessionLine> = rows
        .into_iter()
        .map(|r| SessionLine {
            id: r.id,
            persona: r.persona_slug.unwrap_or_else(|| "-".into()),
            start: r.start_time,
            metered_ms: r.metered_ms,
            charged_ms: r.charged_ms,
            revenue_nanos: revenue.get(&r.id).copied().unwrap_or(0),
            usage: usage.remove(&r.id).unwrap_or_default(),
        })
        .collect();
    Ok(render(since, &lines, prices, currency))
}

fn cost_of(rows: &[StageUsage], prices: &Prices) -> u128 {
    rows.iter().map(|r| prices.get(&r.provider).map_or(0, |p| r.counters.cost_nanos(p))).sum()
}

fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms / 1000, (ms % 1000).abs())
}

fn render(since: DateTime<Utc>, lines: &[SessionLine], prices: &Prices, currency: &str) -> String {
    let mut out = String::new();
    let cur = currency.to_uppercase();
    let _ = writeln!(out, "usage since {} ({} sessions; money in {cur})", since.to_rfc3339(), lines.len());
    let mut personas: BTreeMap<&str, PersonaSum> = BTreeMap::new();
    for l in lines {
        let p = personas.entry(&l.persona).or_default();
        p.sessions += 1;
        p.metered_ms += l.metered_ms;
        p.charged_ms += l.charged_ms;
        p.revenue_nanos += l.revenue_nanos;
        p.cost_nanos += cost_of(&l.usage, prices);
        for u in &l.usage {
            p.usage.add(&u.counters);
            p.providers.entry((u.stage.clone(), u.provider.clone())).or_default().add(&u.counters);
        }
    }
    let _ = writeln!(out, "\nper persona");
    let _ = writeln!(
        out,
        "{:<20} {:>8} {:>12} {:>14} {:>12} {:>14} {:>10} {:>10} {:>10} {:>10}",
        "persona",
        "sessions",
        "billed_s",
        "charged_card_s",
        "revenue",
        "provider_cost",
        "stt_s",
        "prompt_tok",
        "compl_tok",
        "tts_chars"
    );
    for (name, p) in &personas {
        let _ = writeln!(
            out,
            "{:<20} {:>8} {:>12} {:>14} {:>12} {:>14} {:>10} {:>10} {:>10} {:>10}",
            name,
            p.sessions,
            p.metered_ms / 1000,
            seconds(p.charged_ms),
            currency_text(p.revenue_nanos),
            currency_text(p.cost_nanos),
            seconds(p.usage.stt_audio_ms),
            p.usage.llm_prompt_tokens,
            p.usage.llm_completion_tokens,
            p.usage.tts_characters
        );
        for ((stage, provider), c) in &p.providers {
            let _ = writeln!(out, "  {}", provider_line(stage, provider, c, prices));
        }
    }
    let _ = writeln!(out, "\nper session");
    let mut unpriced: Vec<&str> = Vec::new();
    for l in lines {
        let start = l.start.map_or("-".to_string(), |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
        let _ = writeln!(
            out,
            "session {} {} started {start} billed_s {} charged_card_s {} revenue {} provider_cost {}",
            l.id,
            l.persona,
            l.metered_ms / 1000,
            seconds(l.charged_ms),
            currency_text(l.revenue_nanos),
            currency_text(cost_of(&l.usage, prices))
        );
        if l.usage.is_empty() {
            let _ = writeln!(out, "  no provider usage recorded");
        }
        for u in &l.usage {
            if !prices.contains_key(&u.provider) {
                unpriced.push(&u.provider);
            }
            let _ = writeln!(out, "  {}", provider_line(&u.stage, &u.provider, &u.counters, prices));
        }
    }
    unpriced.sort_unstable();
    unpriced.dedup();
    if !unpriced.is_empty() {
        let _ =
            writeln!(out, "\nno [voice.prices.<provider>] for {}: counted at 0 in provider_cost", unpriced.join(", "));
    }
    out
}

/// `stt local audio_s 2.460 cost 0.000246`, and the like for llm and tts.
fn provider_line(stage: &str, provider: &str, c: &Counters, prices: &Prices) -> String {
    let what = match stage {
        "stt" => format!("audio_s {}", seconds(c.stt_audio_ms)),
        "llm" => format!("prompt_tokens {} completion_tokens {}", c.llm_prompt_tokens, c.llm_completion_tokens),
        _ => format!("characters {}", c.tts_characters),
    };
    let cost = prices.get(provider).map_or("unpriced".to_string(), |p| currency_text(c.cost_nanos(p)));
    format!("{stage} {provider} {what} cost {cost}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(stage: &str, provider: &str, counters: Counters) -> StageUsage {
        StageUsage { stage: stage.into(), provider: provider.into(), counters }
    }

    #[test]
    fn a_persona_sums_its_sessions_per_provider_and_unpriced_providers_are_named() {
        let prices: Prices =
            [("local".to_string(), crate::config::ProviderPrices { stt_micros_per_second: 100, ..Default::default() })]
                .into();
        let stt = |ms| row("stt", "local", Counters { stt_audio_ms: ms, ..Default::default() });
        let tts = row("tts", "cartesia", Counters { tts_characters: 300, ..Default::default() });
        let line = |metered_ms, usage| SessionLine {
            persona: "professor-ada".into(),
            metered_ms,
            charged_ms: metered_ms,
            revenue_nanos: 1_000_000,
            usage,
            ..Default::default()
        };
        let lines = [line(10_500, vec![stt(1_500)]), line(20_000, vec![stt(2_500), tts])];
        let text = render(Utc::now(), &lines, &prices, "usd");
        let persona = text.lines().find(|l| l.starts_with("professor-ada")).unwrap();
        let cols: Vec<&str> = persona.split_whitespace().collect();
        // 30.5 s billed, 0.002 revenue, 4 s of audio at 0.0001 a second.
        assert_eq!(cols, ["professor-ada", "2", "30", "30.500", "0.002000", "0.000400", "4.000", "0", "0", "300"]);
        assert!(text.contains("  stt local audio_s 4.000 cost 0.000400\n"), "{text}");
        assert!(text.contains("  tts cartesia characters 300 cost unpriced\n"), "{text}");
        assert!(text.contains("no [voice.prices.<provider>] for cartesia"), "{text}");
        assert_eq!(text.matches("\nsession ").count(), 2, "{text}");
    }

    #[test]
    fn since_takes_a_date_or_an_rfc3339_time_and_names_itself_when_wrong() {
        assert_eq!(parse_since("2026-12-01").unwrap().to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(parse_since("2026-12-01T10:00:00+02:00").unwrap().to_rfc3339(), "2026-12-01T08:00:00+00:00");
        for bad in ["yesterday", "2026-13-01", "", "01/12/2026"] {
            let e = parse_since(bad).unwrap_err().to_string();
            assert!(e.starts_with("--since:") && e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
