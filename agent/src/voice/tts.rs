//! Text to speech: a sentence to audio on the agent's track through an
//! OpenAI-compatible `/v1/audio/speech` (`response_format` "pcm": 24 kHz
//! 16-bit mono), played as the body streams in, upsampled to 48 kHz.

use std::collections::BTreeMap;

use mindbot_transport::room::AudioSource;

use super::provider::{Endpoint, ProviderError};
use crate::usage::SessionUsage;

/// One configured profile (a persona's `voice.tts`).
pub struct TtsProfile {
    pub endpoint: Endpoint,
    /// `voice.style` to the provider's voice name.
    pub voices: BTreeMap<String, String>,
}

pub struct Tts {
    pub profiles: BTreeMap<String, TtsProfile>,
}

impl Tts {
    /// The profile for a persona's `voice.tts` (or `default`).
    pub fn profile(&self, name: &str) -> Option<&TtsProfile> {
        self.profiles.get(name).or_else(|| self.profiles.get("default"))
    }

    /// Speaks `text` onto `out`; `first_audio` runs once, when the first
    /// samples are queued. Its characters are counted in `usage` once the
    /// provider has taken the request (it charges for them even if the
    /// user talks over the rest). With `lead_trim` (an answer's first
    /// sentence) the silence the voice starts with is not played: the
    /// user waits for it otherwise.
    #[allow(clippy::too_many_arguments)]
    pub async fn speak(
        &self,
        client: &reqwest::Client,
        profile: &TtsProfile,
        style: &str,
        text: &str,
        out: &AudioSource,
        lead_trim: bool,
        first_audio: &mut (dyn FnMut() + Send),
        usage: &SessionUsage,
    ) -> Result<(), ProviderError> {
        let ep = &profile.endpoint;
        let mut resp = request(client, profile, style, text).await?;
        usage.tts(&ep.provider, text.chars().count() as u64);
        let mut up = Upsampler::default();
        let mut trim = LeadTrim { done: !lead_trim, ..LeadTrim::default() };
        let mut first = true;
        while let Some(chunk) = ep.chunk(&mut resp).await? {
            let pcm = trim.push(up.push(&chunk));
            if pcm.is_empty() {
                continue;
            }
            if first {
                first = false;
                first_audio();
            }
            if out.push(&pcm).await.is_err() {
                break; // the track is gone: the session is ending
            }
        }
        Ok(())
    }
}

impl Tts {
    /// The whole of `text` as 48 kHz samples (the benchmark's user speaks with it).
    pub async fn synthesize(
        &self,
        client: &reqwest::Client,
        profile: &TtsProfile,
        style: &str,
        text: &str,
    ) -> Result<Vec<i16>, ProviderError> {
        let ep = &profile.endpoint;
        let mut resp = request(client, profile, style, text).await?;
        let mut up = Upsampler::default();
        let mut out = Vec::new();
        while let Some(chunk) = ep.chunk(&mut resp).await? {
            out.extend(up.push(&chunk));
        }
        Ok(out)
    }
}

/// Asks for `text` in the profile's voice for `style`; the body streams.
async fn request(
    client: &reqwest::Client,
    profile: &TtsProfile,
    style: &str,
    text: &str,
) -> Result<reqwest::Response, ProviderError> {
    let ep = &profile.endpoint;
    let voice = profile.voices.get(style).map_or(style, String::as_str);
    let body = serde_json::json!({"model": ep.model, "input": text, "voice": voice, "response_format": "pcm"});
    ep.post(client, "/v1/audio/speech", "application/json", body.to_string().into_bytes()).await
}

/// 24 kHz little-endian bytes to 48 kHz samples, across chunk boundaries
/// (an odd byte and the last sample carry over).
#[derive(Default)]
pub struct Upsampler {
    odd: Option<u8>,
    last: i16,
}

impl Upsampler {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<i16> {
        let mut data = Vec::with_capacity(bytes.len() + 1);
        data.extend(self.odd.take());
        data.extend_from_slice(bytes);
        if data.len() % 2 == 1 {
            self.odd = data.pop();
        }
        let mut out = Vec::with_capacity(data.len());
        for pair in data.chunks_exact(2) {
            let s = i16::from_le_bytes([pair[0], pair[1]]);
            // the midpoint between the previous sample and this one, then this one
            out.push(((i32::from(self.last) + i32::from(s)) / 2) as i16);
            out.push(s);
            self.last = s;
        }
        out
    }
}

/// Below this (about -60 dBFS) a sample is silence to a listener.
const LEAD_QUIET: i16 = 32;
/// Kept before the first audible sample, so the voice's attack is whole.
const LEAD_KEEP: usize = 480; // 10 ms at 48 kHz
/// At most this much is dropped; past it the audio plays as it came.
const LEAD_MAX: usize = 48_000; // 1 s

/// Drops the silence at the start of a voice's audio. Some engines lead
/// every sentence with it (hibari: 0.2 s of zeros, then 0.1 s fading in
/// under -60 dBFS), and at an answer's start that is only waiting.
#[derive(Default)]
pub struct LeadTrim {
    done: bool,
    /// The last quiet samples, at most `LEAD_KEEP`.
    held: Vec<i16>,
    dropped: usize,
}

impl LeadTrim {
    pub fn push(&mut self, pcm: Vec<i16>) -> Vec<i16> {
        if self.done {
            return pcm;
        }
        let onset = pcm.iter().position(|s| s.unsigned_abs() > LEAD_QUIET as u16);
        let mut all = std::mem::take(&mut self.held);
        all.extend_from_slice(&pcm);
        match onset {
            Some(i) => {
                self.done = true;
                let at = all.len() - pcm.len() + i;
                all.split_off(at.saturating_sub(LEAD_KEEP))
            }
            None if self.dropped + pcm.len() > LEAD_MAX => {
                self.done = true;
                all
            }
            None => {
                self.dropped += pcm.len();
                self.held = all.split_off(all.len().saturating_sub(LEAD_KEEP));
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answers_leading_silence_is_dropped_but_its_attack_kept() {
        let mut trim = LeadTrim::default();
        // 0.3 s of quiet over three chunks, then a voice.
        let quiet: Vec<i16> = (0..4800).map(|i| (i % 7) as i16 - 3).collect();
        assert!(trim.push(quiet.clone()).is_empty());
        assert!(trim.push(quiet.clone()).is_empty());
        let mut third = quiet.clone();
        third.extend([1000, -1000, 500]);
        let out = trim.push(third);
        assert_eq!(out.len(), LEAD_KEEP + 3, "10 ms before the onset, then the voice");
        assert_eq!(&out[LEAD_KEEP..], &[1000, -1000, 500]);
        assert_eq!(trim.push(vec![0, 0, 7]), vec![0, 0, 7], "after the onset, silence plays");

        // The onset in the first chunk: only what precedes it within 10 ms goes.
        let mut trim = LeadTrim::default();
        assert_eq!(trim.push(vec![0, 0, 900, 0]), vec![0, 0, 900, 0]);

        // Quiet for over a second: played as it came, not swallowed.
        let mut trim = LeadTrim::default();
        let mut played = 0;
        for _ in 0..11 {
            played += trim.push(vec![0; 4800]).len();
        }
        assert!(played > 0 && trim.done);

        // Off (a later sentence): nothing is dropped.
        let mut trim = LeadTrim { done: true, ..LeadTrim::default() };
        assert_eq!(trim.push(vec![0; 10]), vec![0; 10]);
    }

    #[test]
    fn upsampling_doubles_and_carries_odd_bytes() {
        let mut up = Upsampler::default();
        let bytes: Vec<u8> = [100i16, 200, -300].iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut out = up.push(&bytes[..3]);
        out.extend(up.push(&bytes[3..]));
        assert_eq!(out, vec![50, 100, 150, 200, -50, -300]);
    }
}
