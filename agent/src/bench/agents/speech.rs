//! The talking users' words: each question spoken once by espeak-ng before
//! the benchmark starts (the tests' user voice), read back from its WAV and
//! brought to the room's 48 kHz, so every turn sends the same samples to
//! either worker and no synthesis runs while the workers are measured.

use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use mindbot_transport::room::{FRAME_SAMPLES, SAMPLE_RATE};

/// What the users ask, in turn; user `i` starts at question `i`.
pub const QUESTIONS: [&str; 8] = [
    "Hello. What is your name?",
    "Can you help me with fractions?",
    "What is one half plus one quarter?",
    "Why is the sky blue?",
    "How many days are there in a leap year?",
    "What is a prime number?",
    "Tell me something about the moon.",
    "What book should I read next?",
];

/// The users' espeak-ng voice (the one the voice tests' users speak with).
pub const USER_VOICE: &str = "en-us+f2";

/// A 20 ms block louder than this is someone talking (as in `bench voice`).
pub const LOUD_DBFS: f64 = -45.0;

/// Every question of `QUESTIONS`, as 48 kHz mono samples without the quiet around the words.
pub fn render_questions() -> Result<Vec<Vec<i16>>> {
    QUESTIONS.iter().enumerate().map(|(i, q)| render(i, q)).collect()
}

/// `text` spoken by espeak-ng (`MINDBOT_ESPEAK` or `espeak-ng` on the PATH).
fn render(i: usize, text: &str) -> Result<Vec<i16>> {
    let espeak = std::env::var("MINDBOT_ESPEAK").unwrap_or_else(|_| "espeak-ng".into());
    let wav = std::env::temp_dir().join(format!("bench-agents-{}-question-{i}.wav", std::process::id()));
    let status = Command::new(&espeak)
        .args(["-v", USER_VOICE, "-s", "150", "-w"])
        .arg(&wav)
        .args(["--", text])
        .status()
        .with_context(|| format!("running {espeak} (scripts/deps.sh installs espeak-ng)"))?;
    ensure!(status.success(), "{espeak} failed on {text:?}: {status}");
    let bytes = std::fs::read(&wav).context("reading espeak-ng's WAV");
    let _ = std::fs::remove_file(&wav);
    let bytes = bytes?;
    let (rate, pcm) = read_wav(&bytes).with_context(|| format!("espeak-ng's WAV for {text:?}"))?;
    let pcm = trim(resample(&pcm, rate, SAMPLE_RATE));
    ensure!(!pcm.is_empty(), "espeak-ng rendered {text:?} as silence");
    Ok(pcm)
}

/// Sample rate and samples of a mono 16-bit PCM WAV file.
fn read_wav(bytes: &[u8]) -> Result<(u32, Vec<i16>)> {
    ensure!(bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WAVE", "not a RIFF/WAVE file");
    let (mut rate, mut format_ok, mut at) = (0, false, 12);
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let declared = u32::from_le_bytes(bytes[at + 4..at + 8].try_into()?) as usize;
        let body = &bytes[at + 8..(at + 8).saturating_add(declared).min(bytes.len())];
        match id {
            b"fmt " if body.len() >= 16 => {
                let u16_at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
                rate = u32::from_le_bytes(body[4..8].try_into()?);
                format_ok = u16_at(0) == 1 && u16_at(2) == 1 && u16_at(14) == 16;
            }
            b"data" => {
                ensure!(format_ok && rate > 0, "the data chunk is not mono 16-bit PCM (or comes before its format)");
                let pcm = body.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
                return Ok((rate, pcm));
            }
            _ => {}
        }
        at += 8 + declared + declared % 2; // chunks are padded to even sizes
    }
    bail!("no data chunk")
}

/// Linear interpolation from `from` Hz to `to` Hz: enough for speech that a
/// recogniser hears at 16 kHz (the images it adds lie above 8 kHz).
fn resample(pcm: &[i16], from: u32, to: u32) -> Vec<i16> {
    if from == to || pcm.is_empty() {
        return pcm.to_vec();
    }
    let n = (pcm.len() as u64 * u64::from(to) / u64::from(from)) as usize;
    let step = f64::from(from) / f64::from(to);
    (0..n)
        .map(|i| {
            let x = i as f64 * step;
            let (k, frac) = (x as usize, x.fract());
            let a = f64::from(pcm[k.min(pcm.len() - 1)]);
            let b = f64::from(pcm[(k + 1).min(pcm.len() - 1)]);
            (a + (b - a) * frac).round() as i16
        })
        .collect()
}

/// Whether a block of samples is louder than `LOUD_DBFS`.
pub fn loud(block: &[i16]) -> bool {
    let energy: f64 = block.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (energy / block.len().max(1) as f64).sqrt() / 32768.0;
    20.0 * rms.max(1e-9).log10() > LOUD_DBFS
}

/// Without the quiet before the first and after the last loud 20 ms block.
fn trim(pcm: Vec<i16>) -> Vec<i16> {
    let blocks: Vec<&[i16]> = pcm.chunks(FRAME_SAMPLES).collect();
    let Some(first) = blocks.iter().position(|b| loud(b)) else { return Vec::new() };
    let last = blocks.iter().rposition(|b| loud(b)).map_or(blocks.len(), |i| i + 1);
    blocks[first..last].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(rate: u32, samples: &[i16]) -> Vec<u8> {
        let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut out = b"RIFF".to_vec();
        out.extend((36 + data.len() as u32).to_le_bytes());
        out.extend(b"WAVEfmt ");
        out.extend(16u32.to_le_bytes());
        out.extend([1, 0, 1, 0]); // PCM, mono
        out.extend(rate.to_le_bytes());
        out.extend((rate * 2).to_le_bytes());
        out.extend([2, 0, 16, 0]);
        out.extend(b"data");
        out.extend((data.len() as u32).to_le_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn a_mono_wav_reads_back_its_rate_and_samples_and_other_files_are_refused() {
        assert_eq!(read_wav(&wav(22_050, &[1, -2, 3])).unwrap(), (22_050, vec![1, -2, 3]));
        assert!(read_wav(b"RIFF....WAVX").is_err());
        assert!(read_wav(&wav(22_050, &[])[..36]).is_err(), "a file cut before its data chunk");
    }

    #[test]
    fn resampling_keeps_the_duration_and_the_endpoints() {
        let pcm: Vec<i16> = (0..22_050).map(|i| (i % 100) as i16).collect();
        let out = resample(&pcm, 22_050, 48_000);
        assert_eq!(out.len(), 48_000);
        assert_eq!(out[0], 0);
        assert_eq!(resample(&pcm, 48_000, 48_000), pcm);
    }

    #[test]
    fn every_question_is_rendered_as_a_second_or_more_of_loud_speech() {
        let questions = render_questions().expect("espeak-ng renders the questions");
        assert_eq!(questions.len(), QUESTIONS.len());
        for (pcm, text) in questions.iter().zip(QUESTIONS) {
            assert!(pcm.len() >= SAMPLE_RATE as usize, "{text:?} lasts {} samples", pcm.len());
            assert!(loud(&pcm[..FRAME_SAMPLES]) && loud(&pcm[pcm.len() - FRAME_SAMPLES..]), "{text:?} is trimmed");
        }
    }

    #[test]
    fn trimming_drops_the_quiet_around_the_words() {
        let mut pcm = vec![0i16; FRAME_SAMPLES * 3];
        pcm.extend(vec![8000i16; FRAME_SAMPLES * 2]);
        pcm.extend(vec![0i16; FRAME_SAMPLES * 4]);
        assert_eq!(trim(pcm).len(), FRAME_SAMPLES * 2);
        assert!(trim(vec![0; FRAME_SAMPLES]).is_empty());
    }
}
