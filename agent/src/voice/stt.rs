//! Speech to text: one user turn (48 kHz PCM) to text through an
//! OpenAI-compatible `/v1/audio/transcriptions` (multipart, a 16 kHz WAV).

use super::provider::{Endpoint, ProviderError};
use crate::usage::SessionUsage;

/// Sample rate sent to the recogniser: what speech models use, a third of the bytes.
const STT_RATE: u32 = 16_000;

pub struct Stt {
    pub endpoint: Endpoint,
}

impl Stt {
    /// The words of one turn ("" when the provider heard none); the audio
    /// is counted in `usage` when it is sent: a provider bills what it
    /// received, even when the turn is then dropped (the user went on
    /// talking after a pause's transcription was asked for).
    pub async fn transcribe(
        &self,
        client: &reqwest::Client,
        pcm48: &[i16],
        persona: &str,
        usage: &SessionUsage,
    ) -> Result<String, ProviderError> {
        let wav = wav_16k(pcm48);
        let boundary = format!("mindbot-{:016x}", rand_u64());
        let mut body = Vec::with_capacity(wav.len() + 512);
        let field = |body: &mut Vec<u8>, name: &str, value: &str| {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                    .as_bytes(),
            );
        };
        field(&mut body, "model", &self.endpoint.model);
        field(&mut body, "response_format", "json");
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"turn.wav\"\r\n\
                 Content-Type: audio/wav\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&wav);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let content_type = format!("multipart/form-data; boundary={boundary}");
        usage.stt(&self.endpoint.provider, pcm48.len() as u64 / 48);
        let resp = self.endpoint.post(client, "/v1/audio/transcriptions", &content_type, body).await?;
        let bytes = match tokio::time::timeout(self.endpoint.timeout, resp.bytes()).await {
            Err(_) => return Err(self.endpoint.timed_out()),
            Ok(Err(e)) => return Err(self.endpoint.transport(e)),
            Ok(Ok(b)) => b,
        };
        let answer: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| self.endpoint.invalid(e))?;
        let text = answer["text"].as_str().ok_or_else(|| self.endpoint.invalid("no \"text\" in the answer"))?;
        metrics::histogram!("mindbot_voice_stt_audio_seconds", "persona" => persona.to_string(),
            "provider" => self.endpoint.provider.clone())
        .record(pcm48.len() as f64 / 48_000.0);
        Ok(text.trim().to_string())
    }
}

/// 48 kHz to 16 kHz (each output sample the mean of three: a crude low-pass
/// that is enough for speech) in a WAV container.
pub fn wav_16k(pcm48: &[i16]) -> Vec<u8> {
    let samples: Vec<i16> =
        pcm48.chunks_exact(3).map(|c| ((i32::from(c[0]) + i32::from(c[1]) + i32::from(c[2])) / 3) as i16).collect();
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&STT_RATE.to_le_bytes());
    out.extend_from_slice(&(STT_RATE * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_header_describes_16k_mono_pcm() {
        let wav = wav_16k(&[300; 48_000]);
        assert_eq!(&wav[..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(wav[24..28].try_into().unwrap()), 16_000);
        assert_eq!(u32::from_le_bytes(wav[40..44].try_into().unwrap()), 32_000);
        assert_eq!(wav.len(), 44 + 32_000);
        assert_eq!(i16::from_le_bytes([wav[44], wav[45]]), 300);
    }
}
