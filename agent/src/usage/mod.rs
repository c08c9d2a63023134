//! What each session used of its speech and language providers: seconds of
//! audio sent to speech to text, the prompt and completion tokens the
//! language model reported, characters sent to text to speech, per stage and
//! provider (the provider name of the stage's endpoint in `[voice]`; a text
//! to speech profile's name).
//!
//! The session owns a [`SessionUsage`]; the voice stages add to it as they
//! call their providers, and the session writes its totals to
//! `session_usage` every [`SAVE_EVERY`] and at its end, so a crash loses at
//! most that much. Totals, not increments, are written (never lowered), so a
//! retried or late write cannot count twice.
//!
//! This is not money: nothing here reads or writes a balance, a card or a
//! charge. [`Prices`] turn usage into a provider cost for the operator's
//! report ([`report`]), in exact integers.

pub mod report;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use metering::SessionId;
use sqlx::PgPool;
use tracing::warn;

use crate::config::ProviderPrices;

/// How often a live session's usage is written (and once more at its end).
pub const SAVE_EVERY: Duration = Duration::from_secs(30);

/// The three provider stages of the voice pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Stt,
    Llm,
    Tts,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Stt => "stt",
            Stage::Llm => "llm",
            Stage::Tts => "tts",
        }
    }
}

/// Integer counters of one stage and provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Milliseconds of user audio sent to speech to text.
    pub stt_audio_ms: i64,
    /// Prompt tokens the language model's `usage` reported.
    pub llm_prompt_tokens: i64,
    /// Completion tokens the language model's `usage` reported.
    pub llm_completion_tokens: i64,
    /// Characters sent to text to speech.
    pub tts_characters: i64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.stt_audio_ms = self.stt_audio_ms.saturating_add(o.stt_audio_ms);
        self.llm_prompt_tokens = self.llm_prompt_tokens.saturating_add(o.llm_prompt_tokens);
        self.llm_completion_tokens = self.llm_completion_tokens.saturating_add(o.llm_completion_tokens);
        self.tts_characters = self.tts_characters.saturating_add(o.tts_characters);
    }

    /// The provider cost of these counters at `p`, in nano-units (10^-9 of
    /// the currency): every price is in micro-units per second or per 1000
    /// units and usage is in milliseconds or units, so this is exact.
    pub fn cost_nanos(&self, p: &ProviderPrices) -> u128 {
        // Prices and counters are never negative (validated, CHECKed).
        let n = |v: i64| v.max(0) as u128;
        n(self.stt_audio_ms) * n(p.stt_micros_per_second)
            + n(self.llm_prompt_tokens) * n(p.llm_prompt_micros_per_1k_tokens)
            + n(self.llm_completion_tokens) * n(p.llm_completion_micros_per_1k_tokens)
            + n(self.tts_characters) * n(p.tts_micros_per_1k_characters)
    }
}

/// Provider prices by provider name (`[voice.prices.<provider>]`).
pub type Prices = BTreeMap<String, ProviderPrices>;

/// Nano-units as currency text with six decimals, rounded half up.
pub fn currency_text(nanos: u128) -> String {
    let micros = (nanos + 500) / 1000;
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// One row of `session_usage`: a stage and provider's totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageUsage {
    /// `stt`, `llm` or `tts`.
    pub stage: String,
    /// The provider's name in `[voice]` (a text to speech profile's name).
    pub provider: String,
    pub counters: Counters,
}

/// One session's running totals, shared by its voice stages.
#[derive(Debug, Default)]
pub struct SessionUsage {
    totals: Mutex<BTreeMap<(Stage, String), Counters>>,
    /// Whether the totals changed since the last [`SessionUsage::take_changed`].
    changed: AtomicBool,
    /// Whether "no usage reported" was logged already (once per session).
    said_unreported: AtomicBool,
}

impl SessionUsage {
    fn add(&self, stage: Stage, provider: &str, c: Counters) {
        let mut totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        totals.entry((stage, provider.to_string())).or_default().add(&c);
        self.changed.store(true, Ordering::Release);
    }

    /// `ms` of audio transcribed by `provider`.
    pub fn stt(&self, provider: &str, ms: u64) {
        self.add(Stage::Stt, provider, Counters { stt_audio_ms: clamp(ms), ..Default::default() });
    }

    /// Tokens `provider` reported for one completion.
    pub fn llm(&self, provider: &str, prompt: u64, completion: u64) {
        let c = Counters {
            llm_prompt_tokens: clamp(prompt),
            llm_completion_tokens: clamp(completion),
            ..Default::default()
        };
        self.add(Stage::Llm, provider, c);
    }

    /// A completion from `provider` ended without a `usage`: nothing is
    /// counted (no guess), and the log says so once per session.
    pub fn llm_unreported(&self, provider: &str) {
        if !self.said_unreported.swap(true, Ordering::Relaxed) {
            warn!(provider, "the language model reported no token usage; its tokens are not counted");
        }
    }

    /// `characters` sent to `provider` (a text to speech profile) to speak.
    pub fn tts(&self, provider: &str, characters: u64) {
        self.add(Stage::Tts, provider, Counters { tts_characters: clamp(characters), ..Default::default() });
    }

    /// The totals, if they changed since the last call.
    pub fn take_changed(&self) -> Option<Vec<StageUsage>> {
        if !self.changed.swap(false, Ordering::AcqRel) {
            return None;
        }
        Some(self.rows())
    }

    /// Marks the totals unsaved again (their write failed).
    pub fn mark_changed(&self) {
        self.changed.store(true, Ordering::Release);
    }

    /// The totals, by stage then provider.
    pub fn rows(&self) -> Vec<StageUsage> {
        let totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        totals
            .iter()
            .map(|((stage, provider), c)| StageUsage {
                stage: stage.as_str().to_string(),
                provider: provider.clone(),
                counters: *c,
            })
            .collect()
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Writes a session's totals, in one statement. A total never goes down,
/// so an older write arriving late changes nothing.
pub async fn save(pool: &PgPool, session: SessionId, rows: &[StageUsage]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&Counters) -> i64| rows.iter().map(|r| f(&r.counters)).collect::<Vec<i64>>();
    sqlx::query!(
        "INSERT INTO session_usage (voice_session_id, stage, provider, stt_audio_ms, llm_prompt_tokens,
             llm_completion_tokens, tts_characters)
         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::int8[])
         ON CONFLICT (voice_session_id, stage, provider) DO UPDATE SET
             stt_audio_ms = GREATEST(session_usage.stt_audio_ms, EXCLUDED.stt_audio_ms),
             llm_prompt_tokens = GREATEST(session_usage.llm_prompt_tokens, EXCLUDED.llm_prompt_tokens),
             llm_completion_tokens = GREATEST(session_usage.llm_completion_tokens, EXCLUDED.llm_completion_tokens),
             tts_characters = GREATEST(session_usage.tts_characters, EXCLUDED.tts_characters),
             updated_at = NOW()",
        session.0,
        &rows.iter().map(|r| r.stage.clone()).collect::<Vec<_>>(),
        &rows.iter().map(|r| r.provider.clone()).collect::<Vec<_>>(),
        &col(|c| c.stt_audio_ms),
        &col(|c| c.llm_prompt_tokens),
        &col(|c| c.llm_completion_tokens),
        &col(|c| c.tts_characters)
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The usage rows of `sessions`, by session, in stage then provider order.
pub async fn of_sessions(
    pool: &PgPool,
    sessions: &[uuid::Uuid],
) -> Result<BTreeMap<uuid::Uuid, Vec<StageUsage>>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT voice_session_id, stage, provider, stt_audio_ms, llm_prompt_tokens, llm_completion_tokens,
             tts_characters
         FROM session_usage WHERE voice_session_id = ANY($1) ORDER BY voice_session_id, stage, provider",
        sessions
    )
    .fetch_all(pool)
    .await?;
    let mut out: BTreeMap<uuid::Uuid, Vec<StageUsage>> = BTreeMap::new();
    for r in rows {
        let counters = Counters {
            stt_audio_ms: r.stt_audio_ms,
            llm_prompt_tokens: r.llm_prompt_tokens,
            llm_completion_tokens: r.llm_completion_tokens,
            tts_characters: r.tts_characters,
        };
        out.entry(r.voice_session_id).or_default().push(StageUsage { stage: r.stage, provider: r.provider, counters });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_per_stage_and_provider() {
        let u = SessionUsage::default();
        assert_eq!(u.take_changed(), None);
        u.stt("local", 1500);
        u.stt("local", 500);
        u.llm("openai", 40, 5);
        u.llm("openai", 60, 7);
        u.tts("default", 12);
        let rows = u.take_changed().unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[0].stage.as_str(), rows[0].counters.stt_audio_ms), ("stt", 2000));
        assert_eq!((rows[1].counters.llm_prompt_tokens, rows[1].counters.llm_completion_tokens), (100, 12));
        assert_eq!((rows[2].provider.as_str(), rows[2].counters.tts_characters), ("default", 12));
        assert_eq!(u.take_changed(), None, "nothing new since the last write");
    }

    #[test]
    fn cost_is_exact_in_nano_units() {
        let p = ProviderPrices {
            stt_micros_per_second: 100,           // 0.0001 per second
            llm_prompt_micros_per_1k_tokens: 150, // 0.00015 per 1000
            llm_completion_micros_per_1k_tokens: 600,
            tts_micros_per_1k_characters: 15_000,
        };
        let c = Counters { stt_audio_ms: 2_500, llm_prompt_tokens: 1_001, llm_completion_tokens: 3, tts_characters: 1 };
        // 2500*100 + 1001*150 + 3*600 + 1*15000
        assert_eq!(c.cost_nanos(&p), 250_000 + 150_150 + 1_800 + 15_000);
        assert_eq!(currency_text(c.cost_nanos(&p)), "0.000417");
        assert_eq!(currency_text(1_234_567_499), "1.234567");
        assert_eq!(currency_text(1_234_567_500), "1.234568");
        assert_eq!(Counters::default().cost_nanos(&p), 0);
    }
}
