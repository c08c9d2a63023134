//! Voice activity detection on the user's 20 ms frames: when a turn starts
//! (which also interrupts the agent) and when it ends (the audio to
//! transcribe). Frame energy against a threshold, with a start run and an
//! end-of-turn silence; no model, so it costs a few microseconds a frame.

use std::collections::VecDeque;

/// What a frame changed.
#[derive(Debug, PartialEq, Eq)]
pub enum VadEvent {
    /// Enough speech to be sure the user is talking.
    SpeechStarted,
    /// The user stopped (or the turn hit its length cap): the turn's audio,
    /// with the frames just before the start that the detector needed.
    TurnEnded(Vec<i16>),
}

/// Tuning, in frames of 20 ms.
#[derive(Debug, Clone, Copy)]
pub struct VadSettings {
    /// RMS level (dB full scale) above which a frame is speech.
    pub speech_dbfs: f64,
    pub start_frames: usize,
    pub end_frames: usize,
    pub max_frames: usize,
}

/// The detector's state for one track.
#[derive(Debug)]
pub struct Vad {
    settings: VadSettings,
    threshold: f64,
    voiced: usize,
    silent: usize,
    speaking: bool,
    preroll: VecDeque<Vec<i16>>,
    turn: Vec<i16>,
    frames: usize,
}

impl Vad {
    pub fn new(settings: VadSettings) -> Vad {
        let threshold = 10f64.powf(settings.speech_dbfs / 20.0) * 32768.0;
        Vad {
            settings,
            threshold,
            voiced: 0,
            silent: 0,
            speaking: false,
            preroll: VecDeque::new(),
            turn: Vec::new(),
            frames: 0,
        }
    }

    /// Whether a turn is under way.
    pub fn speaking(&self) -> bool {
        self.speaking
    }

    /// Feeds one frame.
    pub fn push(&mut self, frame: &[i16]) -> Option<VadEvent> {
        let loud = rms(frame) > self.threshold;
        if !self.speaking {
            // A quiet frame between syllables does not reset the run; it only slows it.
            self.voiced = if loud { self.voiced + 1 } else { self.voiced.saturating_sub(1) };
            self.preroll.push_back(frame.to_vec());
            if self.preroll.len() > self.settings.start_frames + 10 {
                self.preroll.pop_front();
            }
            if self.voiced >= self.settings.start_frames {
                self.speaking = true;
                self.silent = 0;
                self.turn = self.preroll.drain(..).flatten().collect();
                self.frames = 0;
                return Some(VadEvent::SpeechStarted);
            }
            return None;
        }
        self.turn.extend_from_slice(frame);
        self.frames += 1;
        self.silent = if loud { 0 } else { self.silent + 1 };
        if self.silent >= self.settings.end_frames || self.frames >= self.settings.max_frames {
            self.speaking = false;
            self.voiced = 0;
            return Some(VadEvent::TurnEnded(std::mem::take(&mut self.turn)));
        }
        None
    }
}

impl Vad {
    /// Ends the turn under way because no audio came for the end-of-turn
    /// time (a sender may stop sending packets in silence).
    pub fn flush(&mut self) -> Option<VadEvent> {
        if !self.speaking {
            return None;
        }
        self.speaking = false;
        self.voiced = 0;
        Some(VadEvent::TurnEnded(std::mem::take(&mut self.turn)))
    }

    /// Level of the last frame pushed, dB full scale (for diagnostics).
    pub fn level_dbfs(frame: &[i16]) -> f64 {
        20.0 * (rms(frame).max(1e-9) / 32768.0).log10()
    }
}

fn rms(frame: &[i16]) -> f64 {
    let energy: f64 = frame.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (energy / frame.len().max(1) as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: VadSettings = VadSettings { speech_dbfs: -40.0, start_frames: 5, end_frames: 30, max_frames: 500 };

    fn tone(amplitude: f64) -> Vec<i16> {
        (0..960).map(|i| ((i as f64 * 0.2).sin() * amplitude) as i16).collect()
    }

    #[test]
    fn a_turn_starts_after_the_start_run_and_ends_after_the_silence() {
        let mut vad = Vad::new(SETTINGS);
        let (loud, quiet) = (tone(8000.0), tone(50.0));
        for _ in 0..20 {
            assert_eq!(vad.push(&quiet), None);
        }
        let events: Vec<_> = (0..5).filter_map(|_| vad.push(&loud)).collect();
        assert_eq!(events, vec![VadEvent::SpeechStarted]);
        for _ in 0..50 {
            assert_eq!(vad.push(&loud), None);
        }
        for _ in 0..29 {
            assert_eq!(vad.push(&quiet), None);
        }
        match vad.push(&quiet) {
            // pre-roll (the start run and what came before it) + 50 loud + 30 quiet frames
            Some(VadEvent::TurnEnded(pcm)) => assert_eq!(pcm.len(), 960 * (15 + 50 + 30)),
            other => panic!("{other:?}"),
        }
        assert!(!vad.speaking());
    }

    #[test]
    fn short_clicks_are_not_speech_and_long_turns_are_cut() {
        let mut vad = Vad::new(SETTINGS);
        let (loud, quiet) = (tone(8000.0), tone(0.0));
        for _ in 0..10 {
            // a click: one loud frame, then quiet
            assert_eq!(vad.push(&loud), None);
            assert_eq!(vad.push(&quiet), None);
        }
        assert!(!vad.speaking());
        let mut vad = Vad::new(VadSettings { max_frames: 10, ..SETTINGS });
        let ended = (0..40).filter_map(|_| vad.push(&loud)).filter(|e| matches!(e, VadEvent::TurnEnded(_))).count();
        assert!(ended >= 2, "{ended}");
    }
}
