//! A user who talks: our own room client in one room, publishing a
//! microphone that sends what a microphone sends (silence between the
//! words, 20 ms at a time) and asking a pre-rendered question every few
//! seconds, and listening to the agent's track for the first loud 20 ms
//! block of each answer. A turn's latency runs from the instant the
//! question's last sample left the user to that block's arrival: what the
//! user hears, whichever worker answers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mindbot_transport::room::{self, AudioSource, ConnectOptions, Room, RoomEvent, FRAME_DURATION, FRAME_SAMPLES};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::speech::loud;
use crate::config::Config;

/// The agent's answer is over after this long without a loud block.
const QUIET: Duration = Duration::from_millis(1500);
/// An answer still going this long after it began is talked over by the next question.
const LONGEST_ANSWER: Duration = Duration::from_secs(30);
/// Audio a mouth keeps queued ahead of the track: speech, else silence.
const AHEAD: Duration = Duration::from_millis(60);

/// How the users talk.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Quiet between the end of an answer (or of waiting for one) and the next question.
    pub gap: Duration,
    /// How long a user waits for an answer to begin before asking the next question.
    pub answer_timeout: Duration,
}

/// One question and what came of it.
#[derive(Debug, Clone, Copy)]
pub struct Turn {
    /// The user's end of speech to the first loud block of the answer; `None`
    /// when none came within the answer timeout.
    pub latency: Option<Duration>,
    /// The agent was loud during the question or just before it (a long or
    /// late answer talked over): the next loud block may be that answer's,
    /// so the latency is not counted.
    pub over_answer: bool,
}

/// A question to speak and where to say when its last sample has gone out.
type Ask = (Arc<Vec<i16>>, oneshot::Sender<Instant>);

/// One talking user.
pub struct Talker {
    pub room_name: String,
    room: Option<Room>,
    turns: Arc<Mutex<Vec<Turn>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Talker {
    /// Joins `room_name` as `identity` and starts listening and sending silence.
    pub async fn join(config: &Config, room_name: &str, identity: &str) -> Result<(Talker, Voice)> {
        let token = super::super::room_token(config, room_name, identity)?;
        // A worker under test can load the cores so much that media takes
        // more than the default 10 s to connect; the user is not what is measured.
        let options = ConnectOptions { join_timeout: Duration::from_secs(30), ..ConnectOptions::default() };
        let (room, mut events) = room::connect(&config.livekit.url, &token, options)
            .await
            .with_context(|| format!("user joining {room_name}"))?;
        let source = room.publish_audio("microphone").await.context("publishing the user's microphone")?;
        let heard: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let (ask, asks) = mpsc::channel::<Ask>(1);
        let ear = heard.clone();
        let listen = tokio::spawn(async move {
            let mut ears = Vec::new();
            while let Some(event) = events.recv().await {
                if let RoomEvent::AudioTrackSubscribed { mut stream, .. } = event {
                    let ear = ear.clone();
                    ears.push(tokio::spawn(async move {
                        while let Some(frame) = stream.recv().await {
                            if loud(&frame.samples) {
                                let mut at = ear.lock().unwrap_or_else(|p| p.into_inner());
                                // Only the last minute matters to a turn.
                                if at.len() >= 3000 {
                                    at.drain(..1500);
                                }
                                at.push(Instant::now());
                            }
                        }
                    }));
                }
            }
            ears.iter().for_each(JoinHandle::abort);
        });
        let tasks = vec![listen, tokio::spawn(mouth(source, asks))];
        let turns = Arc::default();
        let talker = Talker { room_name: room_name.to_string(), room: Some(room), turns, tasks };
        Ok((talker, Voice { ask, heard }))
    }

    /// Starts asking `questions` in turn from `first`, after `delay`.
    pub fn converse(
        &mut self,
        voice: Voice,
        questions: Arc<Vec<Arc<Vec<i16>>>>,
        first: usize,
        pace: Pace,
        delay: Duration,
    ) {
        let turns = self.turns.clone();
        self.tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            for q in first.. {
                let Some(turn) = voice.turn(&questions[q % questions.len()], pace).await else { return };
                let answered = turn.latency.is_some();
                turns.lock().unwrap_or_else(|p| p.into_inner()).push(turn);
                if answered {
                    voice.until_quiet(LONGEST_ANSWER).await;
                }
                tokio::time::sleep(pace.gap).await;
            }
        }));
    }

    /// The turns so far.
    pub fn turns(&self) -> Vec<Turn> {
        self.turns.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub async fn leave(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(room) = self.room.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), room.leave()).await;
        }
    }
}

/// A user's mouth and ears, for its conversation.
pub struct Voice {
    ask: mpsc::Sender<Ask>,
    heard: Arc<Mutex<Vec<Instant>>>,
}

impl Voice {
    /// Asks `question` and waits for the answer to begin; `None` once the room is gone.
    async fn turn(&self, question: &Arc<Vec<i16>>, pace: Pace) -> Option<Turn> {
        let asked = Instant::now();
        let (done, ended) = oneshot::channel();
        self.ask.send((question.clone(), done)).await.ok()?;
        let ended = ended.await.ok()?;
        tokio::time::sleep(ended.saturating_duration_since(Instant::now())).await;
        let over_answer = self.loud_after(asked.checked_sub(QUIET).unwrap_or(asked)).is_some_and(|t| t <= ended);
        let until = ended + pace.answer_timeout;
        let onset = loop {
            if let Some(t) = self.loud_after(ended) {
                break Some(t);
            }
            if Instant::now() >= until {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        Some(Turn { latency: onset.map(|t| t - ended), over_answer })
    }

    /// The first loud block the user received after `after`.
    fn loud_after(&self, after: Instant) -> Option<Instant> {
        let heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        let i = heard.partition_point(|t| *t <= after);
        heard.get(i).copied()
    }

    /// Waits until nothing loud has come for `QUIET`, at most `limit`.
    async fn until_quiet(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            let last = self.heard.lock().unwrap_or_else(|p| p.into_inner()).last().copied();
            if last.is_none_or(|t| t.elapsed() >= QUIET) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Keeps `AHEAD` of audio queued on the user's track, 20 ms at a time: the
/// next question's samples while there are any, else silence. When a
/// question's last samples are queued, says when they will have gone out.
async fn mouth(source: AudioSource, mut asks: mpsc::Receiver<Ask>) {
    let silence = [0i16; FRAME_SAMPLES];
    let mut speaking: Option<(Arc<Vec<i16>>, usize, oneshot::Sender<Instant>)> = None;
    let mut tick = tokio::time::interval(FRAME_DURATION);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if speaking.is_none() {
            speaking = asks.try_recv().ok().map(|(pcm, done)| (pcm, 0, done));
        }
        while source.queued() < AHEAD {
            let ahead = source.queued();
            let pushed = match speaking.take() {
                Some((pcm, at, done)) => {
                    let end = (at + FRAME_SAMPLES).min(pcm.len());
                    let pushed = source.try_push(&pcm[at..end]);
                    if end == pcm.len() {
                        let _ = done
                            .send(Instant::now() + ahead + FRAME_DURATION * (end - at) as u32 / FRAME_SAMPLES as u32);
                    } else {
                        speaking = Some((pcm, end, done));
                    }
                    pushed
                }
                None => source.try_push(&silence),
            };
            if pushed.is_err() {
                return; // the room is gone
            }
        }
    }
}
