//! Voice activity detection on the user's 20 ms frames: when a turn starts
//! (which also pauses the agent) and the turn's audio so far. A frame is
//! speech when it is louder than a threshold *and* stands above the noise
//! floor (the quietest frame of the last second) by a margin, so a steady
//! hum or hiss, however loud, never counts as speech while words over it
//! still do. No model, so it costs a few microseconds a frame. When a turn
//! ends is the pipeline's call (`turn.rs`): the detector only counts.

use std::collections::VecDeque;

use mindbot_transport::room::FrameOrigin;

/// What a frame changed.
#[derive(Debug, PartialEq, Eq)]
pub enum VadEvent {
    /// Enough speech to be sure the user is talking.
    SpeechStarted,
    /// The user stopped (or the turn hit its length cap): the turn's audio,
    /// with the frames just before the start that the detector needed.
    TurnEnded(Vec<i16>),
}

/// Frames (of 20 ms) over which the noise floor is the quietest.
const FLOOR_FRAMES: usize = 50;
/// The floor is the this-many-th quietest frame of the window, not the
/// quietest, so the odd half-empty frame at a sender's dropout cannot sink it.
const FLOOR_RANK: usize = 4;
/// Frames quieter than this (dBFS) are no signal at all (a sender's
/// dropout, digital silence), not a measure of the room's noise.
const NO_SIGNAL_DBFS: f64 = -80.0;

/// Tuning, in frames of 20 ms.
#[derive(Debug, Clone, Copy)]
pub struct VadSettings {
    /// RMS level (dB full scale) above which a frame may be speech.
    pub speech_dbfs: f64,
    /// How far (dB) above the noise floor a speech frame must be (0: no floor).
    pub noise_margin_db: f64,
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
    /// Levels (dBFS) of the last frames, for the noise floor.
    levels: VecDeque<f64>,
    /// Levels of the last frames heard after a gap in the sender's stream,
    /// for the floor until a second of steady frames has come.
    gap_levels: VecDeque<f64>,
    /// Whether the last frame pushed was speech.
    last_speech: bool,
    /// Speech frames in the turn under way.
    speech_frames: usize,
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
            levels: VecDeque::with_capacity(FLOOR_FRAMES + 1),
            gap_levels: VecDeque::new(),
            last_speech: false,
            speech_frames: 0,
        }
    }

    /// Whether the last frame pushed was speech (loud and above the noise floor).
    pub fn last_was_speech(&self) -> bool {
        self.last_speech
    }

    /// Speech frames heard since the turn under way started.
    pub fn speech_frames(&self) -> usize {
        self.speech_frames
    }

    /// The noise floor (dBFS): about the quietest of the last second's
    /// steady frames that carried a signal (the [`FLOOR_RANK`]-th quietest).
    /// Until a second of steady frames has come (a sender that starts in
    /// DTX, whose first steady frames are its first words), the frames heard
    /// after gaps count too.
    pub fn noise_floor_dbfs(&self) -> f64 {
        let gaps = if self.levels.len() < FLOOR_FRAMES { &self.gap_levels } else { &VecDeque::new() };
        let mut lowest = [f64::INFINITY; FLOOR_RANK];
        for &level in self.levels.iter().chain(gaps) {
            if level < lowest[FLOOR_RANK - 1] {
                lowest[FLOOR_RANK - 1] = level;
                lowest.sort_by(f64::total_cmp);
            }
        }
        // A window shorter than the rank (a track's first frames) uses its quietest.
        if self.levels.len() + gaps.len() >= FLOOR_RANK {
            lowest[FLOOR_RANK - 1]
        } else {
            lowest[0]
        }
    }

    /// The turn's audio so far (to transcribe before it has ended).
    pub fn turn_so_far(&self) -> &[i16] {
        &self.turn
    }

    /// Forgets the turn under way (a cough, a noise): no audio comes of it.
    pub fn cancel(&mut self) {
        self.speaking = false;
        self.voiced = 0;
        self.turn.clear();
    }

    /// Whether `frame` is speech; a frame that `measures` the room goes into
    /// the noise floor, another only into the stand-in for a short window.
    fn is_speech(&mut self, frame: &[i16], measures: bool) -> bool {
        let level = Vad::level_dbfs(frame);
        let floor = self.noise_floor_dbfs();
        if level > NO_SIGNAL_DBFS {
            let levels = if measures { &mut self.levels } else { &mut self.gap_levels };
            if levels.len() == FLOOR_FRAMES {
                levels.pop_front();
            }
            levels.push_back(level);
        }
        let above_floor = self.settings.noise_margin_db <= 0.0 || level > floor + self.settings.noise_margin_db;
        rms(frame) > self.threshold && above_floor
    }

    /// Whether a turn is under way.
    pub fn speaking(&self) -> bool {
        self.speaking
    }

    /// Feeds one frame the microphone heard, in the sender's steady stream.
    #[cfg(test)]
    pub fn push(&mut self, frame: &[i16]) -> Option<VadEvent> {
        self.push_from(frame, FrameOrigin::Steady)
    }

    /// Feeds one frame, by what it was decoded from. Only steady frames
    /// measure the noise floor: counted in, the quieter frames a decoder
    /// plays around a sender's DTX or a loss would sink the floor below a
    /// steady hum, and the hum under the user's next sound would pass for
    /// speech. A frame the decoder made up is never speech.
    pub fn push_from(&mut self, frame: &[i16], origin: FrameOrigin) -> Option<VadEvent> {
        let loud = match origin {
            FrameOrigin::Concealed => false,
            FrameOrigin::AfterGap => self.is_speech(frame, false),
            FrameOrigin::Steady => self.is_speech(frame, true),
        };
        self.step(frame, loud)
    }

    fn step(&mut self, frame: &[i16], loud: bool) -> Option<VadEvent> {
        self.last_speech = loud;
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
                self.speech_frames = self.voiced;
                return Some(VadEvent::SpeechStarted);
            }
            return None;
        }
        self.turn.extend_from_slice(frame);
        self.frames += 1;
        self.speech_frames += usize::from(loud);
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

    const SETTINGS: VadSettings =
        VadSettings { speech_dbfs: -40.0, noise_margin_db: 10.0, start_frames: 5, end_frames: 30, max_frames: 500 };

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
        // (Under the second a steady tone needs to become the noise floor.)
        for _ in 0..40 {
            assert_eq!(vad.push(&loud), None);
        }
        for _ in 0..29 {
            assert_eq!(vad.push(&quiet), None);
        }
        match vad.push(&quiet) {
            // pre-roll (the start run and what came before it) + 40 loud + 30 quiet frames
            Some(VadEvent::TurnEnded(pcm)) => assert_eq!(pcm.len(), 960 * (15 + 40 + 30)),
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
        for _ in 0..10 {
            vad.push(&tone(50.0)); // a quiet room, then one long loud turn
        }
        let ended = (0..40).filter_map(|_| vad.push(&loud)).filter(|e| matches!(e, VadEvent::TurnEnded(_))).count();
        assert!(ended >= 2, "{ended}");
    }

    /// Steady noise at `dbfs` (a 100 Hz hum with a little hiss), frame `i`.
    fn hum(i: usize, dbfs: f64) -> Vec<i16> {
        let amplitude = 10f64.powf(dbfs / 20.0) * 32768.0 * std::f64::consts::SQRT_2;
        (0..960)
            .map(|n| {
                let t = (i * 960 + n) as f64 / 48_000.0;
                let hiss = ((n * 7919 + i * 104_729) % 97) as f64 / 97.0 - 0.5;
                (amplitude * ((t * 100.0 * std::f64::consts::TAU).sin() + 0.05 * hiss)) as i16
            })
            .collect()
    }

    /// Words: 200 ms syllables at `dbfs` over the noise, 60 ms gaps of noise.
    fn word(i: usize, dbfs: f64, noise: f64) -> Vec<i16> {
        let mut frame = hum(i, noise);
        if i % 13 < 10 {
            let amplitude = 10f64.powf(dbfs / 20.0) * 32768.0 * std::f64::consts::SQRT_2;
            for (n, s) in frame.iter_mut().enumerate() {
                let t = (i * 960 + n) as f64 / 48_000.0;
                *s = s.saturating_add((amplitude * (t * 220.0 * std::f64::consts::TAU).sin()) as i16);
            }
        }
        frame
    }

    #[test]
    fn dropouts_of_digital_silence_do_not_lower_the_noise_floor() {
        let mut vad = Vad::new(SETTINGS);
        for i in 0..100 {
            vad.push(&hum(i, -30.0));
        }
        for i in 100..400 {
            // a sender that stalls now and then: runs of zeros between the hum,
            // with a frame half hum, half zeros at each edge
            let mut frame = if i % 40 < 15 { vec![0; 960] } else { hum(i, -30.0) };
            if i % 40 == 15 {
                frame[..900].fill(0);
            }
            assert_eq!(vad.push(&frame), None, "frame {i}");
        }
    }

    #[test]
    fn a_track_that_starts_with_a_steady_sound_takes_it_for_noise() {
        let mut vad = Vad::new(SETTINGS);
        assert!((0..100).all(|_| vad.push(&tone(8000.0)).is_none()));
    }

    #[test]
    fn a_loud_steady_hum_never_starts_a_turn_but_words_over_it_do() {
        let mut vad = Vad::new(SETTINGS);
        // 10 s of a hum at -25 dBFS, far above the -40 dBFS threshold.
        for i in 0..500 {
            assert_eq!(vad.push(&hum(i, -25.0)), None, "frame {i}");
        }
        assert!((vad.noise_floor_dbfs() + 25.0).abs() < 1.0, "{}", vad.noise_floor_dbfs());
        // Words 12 dB over it start a turn.
        let started = (500..600).filter_map(|i| vad.push(&word(i, -13.0, -25.0))).next();
        assert_eq!(started, Some(VadEvent::SpeechStarted));
        assert!(vad.speech_frames() >= SETTINGS.start_frames);
    }

    /// The user's client went into DTX over a steady hum (its encoder took
    /// the hum for silence): for a while every 400 ms a frame of audio faded
    /// in after a gap and one made up, both quieter than the hum; then a
    /// cough, and the hum again in full. Speech frames counted after it.
    fn cough_after_dtx(dtx: [FrameOrigin; 2]) -> usize {
        let mut vad = Vad::new(SETTINGS);
        for i in 0..100 {
            vad.push(&hum(i, -25.0));
        }
        for i in 100..160 {
            let faded = hum(i, -25.0 - (i - 99) as f64); // -26 .. -85 dBFS
            vad.push_from(&faded, dtx[i % 2]);
        }
        let mut started = false;
        for i in 160..170 {
            started |= vad.push(&word(i, -10.0, -25.0)) == Some(VadEvent::SpeechStarted);
        }
        assert!(started, "the cough is heard");
        for i in 170..190 {
            vad.push(&hum(i, -25.0));
        }
        vad.speech_frames()
    }

    #[test]
    fn the_quieter_frames_of_a_senders_dtx_do_not_sink_the_floor_under_the_hum() {
        use FrameOrigin::*;
        // Taken for the room's noise, the faded frames put the floor far
        // under the hum, and the hum after the cough counts as speech (long
        // enough to stop the agent's answer).
        assert!(cough_after_dtx([Steady, Steady]) >= 25);
        // Left out of the floor, only the cough's own frames are speech.
        for dtx in [[AfterGap, Concealed], [Concealed, Concealed], [AfterGap, AfterGap]] {
            let n = cough_after_dtx(dtx);
            assert!(n <= 10, "{dtx:?}: {n}");
        }
    }

    #[test]
    fn a_sender_that_starts_in_dtx_is_heard_from_its_first_word() {
        // A quiet room, so the client starts in DTX: only updates after gaps.
        let mut vad = Vad::new(SETTINGS);
        for i in 0..20 {
            vad.push_from(&hum(i, -60.0), if i % 2 == 0 { FrameOrigin::AfterGap } else { FrameOrigin::Concealed });
        }
        assert!((vad.noise_floor_dbfs() + 60.0).abs() < 1.0, "{}", vad.noise_floor_dbfs());
        // The first word comes after a gap, then steadily.
        vad.push_from(&word(20, -20.0, -60.0), FrameOrigin::AfterGap);
        let started = (21..40).filter_map(|i| vad.push(&word(i, -20.0, -60.0))).next();
        assert_eq!(started, Some(VadEvent::SpeechStarted));
    }

    #[test]
    fn a_frame_after_a_gap_can_be_speech_and_a_made_up_one_cannot() {
        let mut vad = Vad::new(SETTINGS);
        for i in 0..50 {
            vad.push(&hum(i, -45.0));
        }
        let loud = word(60, -10.0, -45.0);
        vad.push_from(&loud, FrameOrigin::Concealed);
        assert!(!vad.last_was_speech());
        vad.push_from(&loud, FrameOrigin::AfterGap);
        assert!(vad.last_was_speech());
    }

    #[test]
    fn a_cancelled_turn_leaves_no_audio_and_the_next_one_starts_afresh() {
        let mut vad = Vad::new(SETTINGS);
        let (loud, quiet) = (tone(8000.0), tone(50.0));
        for _ in 0..5 {
            vad.push(&quiet);
        }
        assert!((0..5).filter_map(|_| vad.push(&loud)).any(|e| e == VadEvent::SpeechStarted));
        assert!(!vad.turn_so_far().is_empty());
        vad.cancel();
        assert!(!vad.speaking());
        assert!(vad.flush().is_none());
    }
}
