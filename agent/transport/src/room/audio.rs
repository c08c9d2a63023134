//! Audio both ways: the PCM queue that feeds our published track, Opus
//! encoding and decoding, and the per-track stream of decoded PCM.
//!
//! Everything is 48 kHz mono i16 in 20 ms frames (960 samples), the shape
//! LiveKit and browsers use for Opus. The queue is bounded (a writer that
//! runs ahead waits) and `clear()` empties it so the agent stops talking
//! at once. Nothing here touches sockets; the engine paces frames out.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use crate::room::RoomError;

/// Sample rate of all PCM in and out.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples in one 20 ms frame.
pub const FRAME_SAMPLES: usize = 960;
/// Duration of one frame.
pub const FRAME_DURATION: Duration = Duration::from_millis(20);
/// Biggest Opus packet we produce or accept (far above what 20 ms of voice needs).
const MAX_OPUS_PACKET: usize = 1500;

/// Shared between the `AudioSource` handles and the engine.
#[derive(Debug)]
pub(crate) struct PcmQueue {
    samples: Mutex<VecDeque<i16>>,
    capacity: usize,
    /// Wakes the engine when samples arrive (shared by all of its tracks).
    filled: Arc<Notify>,
    /// Wakes writers waiting for room (at half capacity, on clear and on close).
    drained: Notify,
    closed: AtomicBool,
    /// Held: the engine sends nothing and the samples wait (a paused speaker).
    paused: AtomicBool,
}

impl PcmQueue {
    pub(crate) fn new(capacity: Duration, filled: Arc<Notify>) -> Arc<Self> {
        let capacity = (capacity.as_millis() as usize * SAMPLE_RATE as usize / 1000).max(FRAME_SAMPLES);
        Arc::new(PcmQueue {
            samples: Mutex::new(VecDeque::with_capacity(FRAME_SAMPLES * 4)),
            capacity,
            filled,
            drained: Notify::new(),
            closed: AtomicBool::new(false),
            paused: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<i16>> {
        // A panic while holding this lock cannot leave the queue inconsistent.
        self.samples.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one frame (zero-padded at the end of speech); `false` when empty.
    pub(crate) fn pop_frame(&self, out: &mut [i16; FRAME_SAMPLES]) -> bool {
        if self.paused.load(Ordering::Acquire) {
            return false;
        }
        let mut q = self.lock();
        if q.is_empty() {
            return false;
        }
        let n = q.len().min(FRAME_SAMPLES);
        for (slot, s) in out.iter_mut().zip(q.drain(..n)) {
            *slot = s;
        }
        out[n..].fill(0);
        // Writers wake at half capacity rather than on every frame: one wake
        // per second or so for a writer that runs ahead, instead of fifty.
        let low = q.len() <= self.capacity / 2;
        drop(q);
        if low {
            self.drained.notify_waiters();
        }
        true
    }

    /// Nothing to send now: empty, or paused.
    pub(crate) fn is_empty(&self) -> bool {
        self.paused.load(Ordering::Acquire) || self.lock().is_empty()
    }

    /// No more frames will be taken: writers get `Closed`.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.drained.notify_waiters();
    }
}

/// Our published microphone track: push PCM, it plays out in real time.
/// Cheap to clone; all clones feed the same track.
#[derive(Debug, Clone)]
pub struct AudioSource {
    pub(crate) queue: Arc<PcmQueue>,
    pub(crate) track_sid: String,
}

impl AudioSource {
    /// The server's id for the published track.
    pub fn track_sid(&self) -> &str {
        &self.track_sid
    }

    /// Appends 48 kHz mono samples, waiting while the queue is full.
    pub async fn push(&self, mut pcm: &[i16]) -> Result<(), RoomError> {
        while !pcm.is_empty() {
            let drained = self.queue.drained.notified();
            let taken = self.try_push(pcm)?;
            pcm = &pcm[taken..];
            if !pcm.is_empty() {
                drained.await;
            }
        }
        Ok(())
    }

    /// Appends what fits without waiting; returns how many samples were taken.
    pub fn try_push(&self, pcm: &[i16]) -> Result<usize, RoomError> {
        if self.queue.closed.load(Ordering::Acquire) {
            return Err(RoomError::Closed);
        }
        let mut q = self.queue.lock();
        let n = pcm.len().min(self.queue.capacity.saturating_sub(q.len()));
        q.extend(&pcm[..n]);
        drop(q);
        if n > 0 {
            self.queue.filled.notify_one();
        }
        Ok(n)
    }

    /// Drops everything not yet sent: the track goes quiet within one frame.
    pub fn clear(&self) {
        self.queue.lock().clear();
        self.queue.drained.notify_waiters();
    }

    /// Holds the queued audio: the track goes quiet within one frame and
    /// writers wait once the queue is full; `resume` plays on from there.
    pub fn pause(&self) {
        self.queue.paused.store(true, Ordering::Release);
    }

    /// Plays on what `pause` held.
    pub fn resume(&self) {
        if self.queue.paused.swap(false, Ordering::AcqRel) {
            self.queue.filled.notify_one();
        }
    }

    /// How much audio is waiting to be sent.
    pub fn queued(&self) -> Duration {
        let samples = self.queue.lock().len() as u64;
        Duration::from_micros(samples * 1_000_000 / SAMPLE_RATE as u64)
    }
}

/// One 20 ms frame of decoded audio from a remote track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    /// 48 kHz mono samples (960 for a 20 ms packet).
    pub samples: Vec<i16>,
    /// What the frame was decoded from.
    pub origin: FrameOrigin,
}

/// What a decoded frame came from, as far as telling speech from the room's
/// noise goes. A sender in discontinuous transmission (DTX: its encoder took
/// what it heard for silence) sends, every 400 ms, one packet of audio and one
/// of a byte; the decoder fills in, and what it plays is quieter than what
/// the microphone heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameOrigin {
    /// A packet that follows the one before it in the sender's timeline:
    /// what the microphone heard.
    Steady,
    /// A packet after a gap in the sender's timeline (DTX's updates, speech
    /// resuming after DTX, a loss): heard audio, but faded in from what the
    /// decoder made up, so its level is no measure of the room's noise.
    AfterGap,
    /// Made up by the decoder: a lost packet concealed, or a DTX packet.
    Concealed,
}

/// The longest Opus packet that carries no audio (a TOC byte, maybe one
/// more): what a sender in DTX sends, which decodes as a concealed frame.
const DTX_PACKET_BYTES: usize = 2;

/// Decoded PCM from one remote audio track, in order. Frames the owner does
/// not take in time are dropped rather than delaying the connection.
#[derive(Debug)]
pub struct AudioStream {
    pub(crate) rx: mpsc::Receiver<AudioFrame>,
}

impl AudioStream {
    /// The next frame; `None` once the track is gone or the room closed.
    pub async fn recv(&mut self) -> Option<AudioFrame> {
        self.rx.recv().await
    }
}

/// Opus encoder for our track: voice, mono, 20 ms.
pub(crate) struct Encoder {
    opus: opus::Encoder,
    buf: Vec<u8>,
}

impl Encoder {
    pub(crate) fn new(complexity: i32) -> Result<Self, RoomError> {
        // The "audio" application at 32 kb/s runs Opus's CELT layer, which costs
        // about a quarter of the "voip" (SILK/hybrid) path on this machine
        // (41 vs 158 µs per 20 ms frame at complexity 5) and carries TTS speech well.
        let mut opus = opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Audio)?;
        opus.set_bitrate(opus::Bitrate::Bits(32_000))?;
        opus.set_complexity(complexity.clamp(0, 10))?;
        Ok(Encoder { opus, buf: vec![0; MAX_OPUS_PACKET] })
    }

    /// Encodes one frame; the slice is valid until the next call.
    pub(crate) fn encode(&mut self, frame: &[i16; FRAME_SAMPLES]) -> Result<&[u8], RoomError> {
        let n = self.opus.encode(frame, &mut self.buf)?;
        Ok(&self.buf[..n])
    }
}

/// RFC 6464 audio level of a frame: dB below full scale, 0 (loud) to 127 (silence).
pub(crate) fn audio_level(frame: &[i16]) -> u8 {
    let energy: f64 = frame.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (energy / frame.len().max(1) as f64).sqrt() / 32768.0;
    if rms <= 0.0 {
        return 127;
    }
    (-20.0 * rms.log10()).clamp(0.0, 127.0) as u8
}

/// Opus decoder for one remote track, feeding its `AudioStream`.
pub(crate) struct Decoder {
    opus: opus::Decoder,
    /// Room for the longest packet (120 ms), reused so each frame costs one small copy.
    scratch: Vec<i16>,
    tx: mpsc::Sender<AudioFrame>,
    dropped: u64,
    /// The RTP time (48 kHz) the next packet has if it follows the last one.
    next_rtp: Option<u64>,
}

impl Decoder {
    /// A decoder and the stream its frames go to (`capacity` frames buffered).
    pub(crate) fn new(capacity: usize) -> Result<(Self, AudioStream), RoomError> {
        let opus = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)?;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let decoder = Decoder { opus, scratch: vec![0; FRAME_SAMPLES * 6], tx, dropped: 0, next_rtp: None };
        Ok((decoder, AudioStream { rx }))
    }

    /// Conceals one lost packet with a frame.
    pub(crate) fn conceal(&mut self) -> bool {
        self.decode(&[], None)
    }

    /// Decodes one packet, sent at RTP time `rtp` (48 kHz), and hands the
    /// frame on. Returns `false` once the owner has dropped the stream.
    pub(crate) fn packet(&mut self, packet: &[u8], rtp: u64) -> bool {
        self.decode(packet, Some(rtp))
    }

    fn decode(&mut self, packet: &[u8], rtp: Option<u64>) -> bool {
        if self.tx.is_closed() {
            return false;
        }
        // A lost packet is concealed with one frame (given room for more,
        // the decoder would make up as much as the room).
        let room = if packet.is_empty() { FRAME_SAMPLES } else { self.scratch.len() };
        let n = match self.opus.decode(packet, &mut self.scratch[..room], false) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "undecodable Opus packet");
                return true;
            }
        };
        let origin = match rtp {
            _ if packet.len() <= DTX_PACKET_BYTES => FrameOrigin::Concealed,
            Some(t) if self.next_rtp == Some(t) => FrameOrigin::Steady,
            _ => FrameOrigin::AfterGap,
        };
        if let Some(t) = rtp {
            self.next_rtp = Some(t.wrapping_add(n as u64));
        }
        if self.tx.try_send(AudioFrame { samples: self.scratch[..n].to_vec(), origin }).is_err() {
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                tracing::debug!(dropped = self.dropped, "audio stream reader is behind; frames dropped");
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, n: usize) -> Vec<i16> {
        (0..n).map(|i| ((i as f64 * freq * 2.0 * std::f64::consts::PI / 48_000.0).sin() * 8000.0) as i16).collect()
    }

    #[test]
    fn queue_pads_the_last_frame_and_clear_empties_it() {
        let source =
            AudioSource { queue: PcmQueue::new(Duration::from_secs(1), Arc::default()), track_sid: "TR_x".into() };
        assert_eq!(source.try_push(&[7; 1000]).unwrap(), 1000);
        let mut frame = [0i16; FRAME_SAMPLES];
        assert!(source.queue.pop_frame(&mut frame));
        assert!(frame.iter().all(|&s| s == 7));
        assert!(source.queue.pop_frame(&mut frame));
        assert_eq!(&frame[..40], &[7; 40]);
        assert!(frame[40..].iter().all(|&s| s == 0));
        source.try_push(&[1; 5000]).unwrap();
        source.clear();
        assert!(!source.queue.pop_frame(&mut frame));
    }

    #[test]
    fn a_paused_queue_sends_nothing_and_resumes_where_it_stopped() {
        let source =
            AudioSource { queue: PcmQueue::new(Duration::from_secs(1), Arc::default()), track_sid: "TR_x".into() };
        source.try_push(&[3; FRAME_SAMPLES]).unwrap();
        source.try_push(&[4; FRAME_SAMPLES]).unwrap();
        let mut frame = [0i16; FRAME_SAMPLES];
        assert!(source.queue.pop_frame(&mut frame));
        source.pause();
        assert!(source.queue.is_empty(), "nothing to send while paused");
        assert!(!source.queue.pop_frame(&mut frame));
        assert_eq!(source.queued(), FRAME_DURATION, "the rest is held, not dropped");
        source.resume();
        assert!(source.queue.pop_frame(&mut frame));
        assert!(frame.iter().all(|&s| s == 4));
    }

    #[test]
    fn queue_is_bounded_and_refuses_after_close() {
        let source =
            AudioSource { queue: PcmQueue::new(Duration::from_millis(20), Arc::default()), track_sid: String::new() };
        assert_eq!(source.try_push(&[0; 2000]).unwrap(), FRAME_SAMPLES);
        source.queue.close();
        assert!(matches!(source.try_push(&[0; 1]), Err(RoomError::Closed)));
    }

    #[test]
    fn opus_round_trip_keeps_a_tone() {
        let mut enc = Encoder::new(5).unwrap();
        let (mut dec, mut stream) = Decoder::new(100).unwrap();
        let pcm = tone(880.0, FRAME_SAMPLES * 10);
        for chunk in pcm.chunks(FRAME_SAMPLES) {
            let frame: &[i16; FRAME_SAMPLES] = chunk.try_into().unwrap();
            let packet = enc.encode(frame).unwrap().to_vec();
            assert!(dec.packet(&packet, 0));
        }
        let mut last = None;
        while let Ok(f) = stream.rx.try_recv() {
            assert_eq!(f.samples.len(), FRAME_SAMPLES);
            last = Some(f);
        }
        let last = last.unwrap();
        let level = audio_level(&last.samples);
        assert!((10..=16).contains(&level), "level {level}");
    }

    #[test]
    fn frames_say_whether_they_were_heard_steadily_after_a_gap_or_made_up() {
        let mut enc = Encoder::new(5).unwrap();
        let (mut dec, mut stream) = Decoder::new(100).unwrap();
        let pcm = tone(440.0, FRAME_SAMPLES);
        let packet = enc.encode(pcm.as_slice().try_into().unwrap()).unwrap().to_vec();
        assert!(packet.len() > DTX_PACKET_BYTES);
        let frame = FRAME_SAMPLES as u64;
        // What a sender in DTX sends: audio, a byte of TOC a frame later,
        // nothing for 380 ms, then audio again; a loss; steady audio.
        assert!(dec.packet(&packet, 1000));
        assert!(dec.packet(&packet[..1], 1000 + frame));
        assert!(dec.packet(&packet, 1000 + 20 * frame));
        assert!(dec.conceal());
        assert!(dec.packet(&packet, 1000 + 22 * frame));
        assert!(dec.packet(&packet, 1000 + 23 * frame));
        let frames: Vec<AudioFrame> = std::iter::from_fn(|| stream.rx.try_recv().ok()).collect();
        use FrameOrigin::*;
        let origins: Vec<FrameOrigin> = frames.iter().map(|f| f.origin).collect();
        assert_eq!(origins, [AfterGap, Concealed, AfterGap, Concealed, AfterGap, Steady]);
        assert!(frames.iter().all(|f| f.samples.len() == FRAME_SAMPLES));
    }
}
