// Levels of audio tracks through Web Audio analysers: the microphone meter
// and the agent's visualizer read them every animation frame.

let shared: AudioContext | null = null;

/// One AudioContext for the page (browsers cap how many may exist).
export function audioContext(): AudioContext {
  if (!shared) shared = new AudioContext();
  if (shared.state === "suspended") void shared.resume();
  return shared;
}

/// An analyser fed by one media track; `close` disconnects it.
export interface TrackAnalyser {
  analyser: AnalyserNode;
  close: () => void;
}

export function analyse(track: MediaStreamTrack, fftSize = 256): TrackAnalyser {
  const ctx = audioContext();
  const source = ctx.createMediaStreamSource(new MediaStream([track]));
  const analyser = ctx.createAnalyser();
  analyser.fftSize = fftSize;
  source.connect(analyser);
  return { analyser, close: () => source.disconnect() };
}

/// Root-mean-square level of the analyser's latest samples, 0..1.
export function rms(analyser: AnalyserNode, buffer: Float32Array<ArrayBuffer>): number {
  analyser.getFloatTimeDomainData(buffer);
  let sum = 0;
  for (const v of buffer) sum += v * v;
  return Math.sqrt(sum / buffer.length);
}

/// `bands` loudness values 0..1 from the analyser's spectrum.
export function bands(analyser: AnalyserNode, buffer: Uint8Array<ArrayBuffer>, count: number): number[] {
  analyser.getByteFrequencyData(buffer);
  const per = Math.max(1, Math.floor(buffer.length / 2 / count));
  const out: number[] = [];
  for (let b = 0; b < count; b++) {
    let max = 0;
    for (let i = b * per; i < (b + 1) * per && i < buffer.length; i++) max = Math.max(max, buffer[i]);
    out.push(max / 255);
  }
  return out;
}
