//! When the user's turn is over, and what the user's voice does to the
//! agent's. Pure decisions, time passed in: the pipeline owns the clock,
//! the audio and the tasks.
//!
//! End of turn: in `transcript` mode the turn so far is transcribed at the
//! first short pause (`turn_pause_ms` of quiet) and judged by how it ends.
//! A finished sentence or question ends the turn at once, and that
//! transcript is the turn's: the model starts on it without a second pass.
//! A trailing "and", "um", "so"... waits for `trailing_end_of_turn_ms` of
//! quiet. Speech before the decision drops the judgement. In `silence` mode
//! (and when the first transcription fails) the turn ends after
//! `end_of_turn_ms` of quiet, as a plain detector does.
//!
//! Interruptions: speech while the agent talks pauses it; under
//! `interruption_ms` of speech (a cough, an "mm-hm") followed by a short
//! pause, it plays on from where it paused; longer speech stops it.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::TurnDetection;

/// The turn-taking settings, from `[voice]`.
#[derive(Debug, Clone, Copy)]
pub struct TurnSettings {
    pub mode: TurnDetection,
    /// Quiet after which the turn so far is transcribed and judged, and after
    /// which a short sound over the agent counts as over.
    pub pause: Duration,
    /// Quiet that ends a turn in `silence` mode or when judging failed.
    pub end_of_turn: Duration,
    /// Quiet that ends a turn whose words trail off.
    pub trailing: Duration,
    /// Speech frames over the agent that stop it (fewer only pause it).
    pub interruption_frames: usize,
}

impl TurnSettings {
    /// The longest quiet any turn waits for (the detector's own backstop).
    pub fn longest_quiet(&self) -> Duration {
        match self.mode {
            TurnDetection::Silence => self.end_of_turn,
            TurnDetection::Transcript => self.end_of_turn.max(self.trailing),
        }
    }
}

/// How the words of a turn so far end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// A sentence or question that could stand as the whole turn (or nothing
    /// was heard: no reason to wait).
    Complete,
    /// A conjunction, a filler or a word that needs another after it.
    Trailing,
}

/// Words after which a speaker is rarely done: conjunctions, fillers,
/// articles, prepositions and possessives.
const TRAILING_WORDS: &[&str] = &[
    "a", "about", "an", "and", "as", "at", "because", "but", "er", "erm", "for", "from", "hmm", "i", "i'm", "if", "in",
    "like", "my", "of", "on", "or", "our", "so", "than", "that", "the", "their", "then", "to", "uh", "um", "well",
    "what", "when", "where", "which", "while", "with", "your",
];

/// Openers a speaker rarely stops at: a greeting or an interjection said
/// alone ("Hello." before the question) does not end the turn at once.
const OPENERS: &[&str] = &["hello", "hi", "hey", "oh", "ok", "okay"];

/// Lower-case letters, digits and apostrophes of a word.
fn bare(word: &str) -> String {
    word.chars().filter(|c| c.is_alphanumeric() || *c == '\'').flat_map(char::to_lowercase).collect()
}

/// Judges the end of a transcript: a lone opener trails; else punctuation
/// when the recogniser writes it, else the last word.
pub fn ending(transcript: &str) -> Ending {
    let text = transcript.trim();
    let mut words = text.split_whitespace();
    if let (Some(only), None) = (words.next(), words.next()) {
        if OPENERS.contains(&bare(only).as_str()) {
            return Ending::Trailing;
        }
    }
    match text.chars().last() {
        None | Some('.' | '?' | '!') => return Ending::Complete,
        Some(',' | '-' | '\u{2026}' | ':' | ';') => return Ending::Trailing,
        _ => {}
    }
    let last = text.rsplit(char::is_whitespace).next().unwrap_or("");
    if TRAILING_WORDS.contains(&bare(last).as_str()) {
        Ending::Trailing
    } else {
        Ending::Complete
    }
}

/// What is known of the words of the turn under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Not transcribed yet.
    None,
    /// Being transcribed.
    Pending,
    /// Transcribed; the words trail off.
    Trailing(String),
    /// Transcription failed: fall back to the plain quiet.
    Failed,
}

/// What to do when the quiet since the last speech reaches the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// A short sound over the paused agent is over: let it play on.
    Resume,
    /// Transcribe the turn so far and judge it.
    Probe,
    /// The turn is over.
    End,
}

/// The next decision for a turn under way whose last speech was at
/// `last_speech`: when, and what. `paused` says the agent is paused by it.
pub fn next(s: &TurnSettings, last_speech: Instant, paused: bool, judged: &Judgement) -> (Instant, Due) {
    if paused {
        return (last_speech + s.pause, Due::Resume);
    }
    let (quiet, due) = match (s.mode, judged) {
        (TurnDetection::Silence, _) | (TurnDetection::Transcript, Judgement::Failed) => (s.end_of_turn, Due::End),
        (TurnDetection::Transcript, Judgement::None) => (s.pause, Due::Probe),
        (TurnDetection::Transcript, Judgement::Pending | Judgement::Trailing(_)) => (s.trailing, Due::End),
    };
    (last_speech + quiet, due)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: TurnSettings = TurnSettings {
        mode: TurnDetection::Transcript,
        pause: Duration::from_millis(250),
        end_of_turn: Duration::from_millis(600),
        trailing: Duration::from_millis(1500),
        interruption_frames: 15,
    };

    #[test]
    fn sentences_and_questions_are_complete_and_trailing_words_are_not() {
        for done in ["What is your name?", "what is your name", "Tell me about fractions.", "", "  ", "thanks"] {
            assert_eq!(ending(done), Ending::Complete, "{done:?}");
        }
        for open in ["I would like to ask you something and", "so um", "Tell me about fractions, ", "and I'm", "Well,"]
        {
            assert_eq!(ending(open), Ending::Trailing, "{open:?}");
        }
        assert_eq!(ending("Can you help me with THE"), Ending::Trailing);
    }

    #[test]
    fn a_lone_greeting_waits_for_the_question_after_it() {
        for opener in ["Hello.", "hello", "Hi!", "Oh.", " okay "] {
            assert_eq!(ending(opener), Ending::Trailing, "{opener:?}");
        }
        for done in ["Hello. What is your name?", "Hello there.", "Yes.", "No"] {
            assert_eq!(ending(done), Ending::Complete, "{done:?}");
        }
    }

    #[test]
    fn a_turn_is_judged_at_the_first_pause_and_a_trailing_one_waits_longer() {
        let t = Instant::now();
        assert_eq!(next(&S, t, false, &Judgement::None), (t + S.pause, Due::Probe));
        assert_eq!(next(&S, t, false, &Judgement::Pending), (t + S.trailing, Due::End));
        assert_eq!(next(&S, t, false, &Judgement::Trailing("and".into())), (t + S.trailing, Due::End));
        assert_eq!(next(&S, t, false, &Judgement::Failed), (t + S.end_of_turn, Due::End));
        let silence = TurnSettings { mode: TurnDetection::Silence, ..S };
        assert_eq!(next(&silence, t, false, &Judgement::None), (t + S.end_of_turn, Due::End));
        assert_eq!(silence.longest_quiet(), S.end_of_turn);
        assert_eq!(S.longest_quiet(), S.trailing);
    }

    #[test]
    fn a_paused_agent_resumes_after_the_short_pause() {
        let t = Instant::now();
        assert_eq!(next(&S, t, true, &Judgement::None), (t + S.pause, Due::Resume));
    }
}
