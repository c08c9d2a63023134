//! `[voice]`: the voice pipeline's turn taking and its three providers
//! (speech to text, the language model, text to speech profiles), and what
//! each provider charges, for the usage report.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use serde::Deserialize;

use super::{Secret, DEFAULT_TOML};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceConfig {
    pub enabled: bool,
    pub greet: bool,
    pub speak_warnings: bool,
    /// The goodbye starts this long before the balance runs out (0: none).
    pub goodbye_lead_seconds: u64,
    /// Frames louder than this (dB full scale) may be speech.
    pub speech_dbfs: f64,
    /// Speech stands this far (dB) above the noise floor (0: no floor).
    pub noise_margin_db: f64,
    pub speech_start_ms: u64,
    /// How a turn's end is decided.
    pub turn_detection: TurnDetection,
    /// Quiet after which the turn so far is transcribed and judged.
    pub turn_pause_ms: u64,
    /// Quiet that ends a turn (`silence` mode, or when judging failed).
    pub end_of_turn_ms: u64,
    /// Quiet that ends a turn whose words trail off ("and", "um").
    pub trailing_end_of_turn_ms: u64,
    /// Speech over the agent shorter than this pauses it; longer stops it.
    pub interruption_ms: u64,
    pub max_turn_seconds: u64,
    pub history_turns: usize,
    pub stt: SttConfig,
    pub llm: LlmConfig,
    /// Text to speech profiles by name (a persona's `voice.tts`); `default` is the fallback.
    pub tts: BTreeMap<String, TtsProfile>,
    /// Provider prices by provider name, for the usage report (none: cost 0).
    #[serde(default)]
    pub prices: BTreeMap<String, ProviderPrices>,
}

/// How the end of a user's turn is decided (`voice.turn_detection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnDetection {
    /// A fixed quiet (`end_of_turn_ms`).
    Silence,
    /// The turn so far is transcribed at the first pause and judged by its ending.
    Transcript,
}

impl<'de> Deserialize<'de> for TurnDetection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let given = String::deserialize(d)?;
        super::one_of(
            "voice.turn_detection",
            &[("transcript", TurnDetection::Transcript), ("silence", TurnDetection::Silence)],
            &given,
        )
    }
}

impl Default for VoiceConfig {
    /// `config.toml`'s `[voice]`, switched off: a config file written before
    /// voice was on by default does not start calling the local stack.
    fn default() -> Self {
        let mut defaults: toml::Table = DEFAULT_TOML.parse().expect("built-in config.toml parses");
        let voice: VoiceConfig = defaults
            .remove("voice")
            .expect("config.toml has [voice]")
            .try_into()
            .expect("[voice] defaults deserialize");
        VoiceConfig { enabled: false, ..voice }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SttConfig {
    /// A name for metrics (`mindbot_voice_errors_total{provider}`).
    pub provider: String,
    pub base_url: String,
    pub model: String,
    pub api_key: Secret,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    pub provider: String,
    pub base_url: String,
    pub model: String,
    pub api_key: Secret,
    /// Until the first streamed token.
    pub timeout_ms: u64,
    pub max_tokens: u32,
    /// Whether the personas' tools are offered (a small local model cannot
    /// call them); a config file without the key offers them, as before.
    #[serde(default = "offer_tools")]
    pub tools: bool,
    /// Whether a session sends the persona's prompt once at its start, so a
    /// server that caches prompts (llama.cpp's) has read it before the
    /// first turn; off by default: a hosted provider bills it as a request.
    #[serde(default)]
    pub warm_up: bool,
}

fn offer_tools() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtsProfile {
    pub base_url: String,
    pub model: String,
    pub api_key: Secret,
    pub timeout_ms: u64,
    /// Persona `voice.style` to the provider's voice name.
    #[serde(default)]
    pub voices: BTreeMap<String, String>,
}

/// What one provider charges, in integer micro-units of the currency
/// (1 = 0.000001): per second of audio transcribed, per 1000 prompt or
/// completion tokens, per 1000 characters spoken. A missing key is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderPrices {
    pub stt_micros_per_second: i64,
    pub llm_prompt_micros_per_1k_tokens: i64,
    pub llm_completion_micros_per_1k_tokens: i64,
    pub tts_micros_per_1k_characters: i64,
}

impl ProviderPrices {
    /// Each price with its key name, for validation.
    fn named(&self) -> [(&'static str, i64); 4] {
        [
            ("stt_micros_per_second", self.stt_micros_per_second),
            ("llm_prompt_micros_per_1k_tokens", self.llm_prompt_micros_per_1k_tokens),
            ("llm_completion_micros_per_1k_tokens", self.llm_completion_micros_per_1k_tokens),
            ("tts_micros_per_1k_characters", self.tts_micros_per_1k_characters),
        ]
    }
}

impl VoiceConfig {
    pub(super) fn validate(&self) -> Result<()> {
        let v = self;
        for (provider, prices) in &v.prices {
            if let Some((key, price)) = prices.named().into_iter().find(|(_, p)| *p < 0) {
                bail!("config key voice.prices.{provider}.{key} must be 0 or more (got {price})");
            }
        }
        if !(-90.0..=0.0).contains(&v.speech_dbfs) {
            bail!("config key voice.speech_dbfs must be between -90 and 0 (got {})", v.speech_dbfs);
        }
        if v.speech_start_ms < 20 || v.end_of_turn_ms < 100 || v.max_turn_seconds == 0 {
            bail!("config keys voice.speech_start_ms (>= 20), voice.end_of_turn_ms (>= 100) and voice.max_turn_seconds (> 0) are out of range");
        }
        if !(0.0..=40.0).contains(&v.noise_margin_db) {
            bail!("config key voice.noise_margin_db must be between 0 and 40 (got {})", v.noise_margin_db);
        }
        if v.turn_pause_ms < 100 || v.turn_pause_ms > v.end_of_turn_ms {
            bail!(
                "config key voice.turn_pause_ms must be at least 100 and at most voice.end_of_turn_ms ({}) (got {})",
                v.end_of_turn_ms,
                v.turn_pause_ms
            );
        }
        if v.trailing_end_of_turn_ms < v.turn_pause_ms {
            bail!(
                "config key voice.trailing_end_of_turn_ms must be at least voice.turn_pause_ms ({}) (got {})",
                v.turn_pause_ms,
                v.trailing_end_of_turn_ms
            );
        }
        if v.interruption_ms < v.speech_start_ms {
            bail!(
                "config key voice.interruption_ms must be at least voice.speech_start_ms ({}) (got {})",
                v.speech_start_ms,
                v.interruption_ms
            );
        }
        let urls = [("voice.stt.base_url", &v.stt.base_url), ("voice.llm.base_url", &v.llm.base_url)];
        let profiles = v.tts.iter().map(|(name, p)| (format!("voice.tts.{name}.base_url"), &p.base_url));
        for (key, url) in urls.into_iter().map(|(k, u)| (k.to_string(), u)).chain(profiles) {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("config key {key} must be an http:// or https:// URL (got {url:?})");
            }
        }
        for (key, ms) in [("voice.stt.timeout_ms", v.stt.timeout_ms), ("voice.llm.timeout_ms", v.llm.timeout_ms)]
            .into_iter()
            .map(|(k, m)| (k.to_string(), m))
            .chain(v.tts.iter().map(|(n, p)| (format!("voice.tts.{n}.timeout_ms"), p.timeout_ms)))
        {
            if ms == 0 {
                bail!("config key {key} must be positive");
            }
        }
        if v.enabled && !v.tts.contains_key("default") {
            bail!("config key voice.tts.default is needed when voice.enabled is true");
        }
        Ok(())
    }
}
