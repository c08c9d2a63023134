// The microphone level meter and the agent's audio visualizer: both read a
// track through a Web Audio analyser each animation frame.
import { useEffect, useState } from "react";
import { analyse, bands, rms } from "./audio";

/// While `track` is set, reads it through an analyser (of `fftSize`, or the
/// default) each animation frame: `start` is given the analyser once and
/// returns what to run each frame.
function useEachFrame(
  track: MediaStreamTrack | null,
  fftSize: number | undefined,
  start: (analyser: AnalyserNode) => () => void,
) {
  useEffect(() => {
    if (!track) return;
    const { analyser, close } = analyse(track, fftSize);
    const read = start(analyser);
    let frame = 0;
    const tick = () => {
      read();
      frame = requestAnimationFrame(tick);
    };
    frame = requestAnimationFrame(tick);
    return () => {
      cancelAnimationFrame(frame);
      close();
    };
  }, [track]);
}

/// How loud the microphone is, as a meter screen readers announce on request.
export function MicMeter({ track }: { track: MediaStreamTrack | null }) {
  const [level, setLevel] = useState(0);
  useEachFrame(track, undefined, (analyser) => {
    const buffer = new Float32Array(analyser.fftSize);
    // Speech RMS sits around 0.05-0.3: scale so it fills the bar.
    return () => setLevel(Math.min(100, Math.round(rms(analyser, buffer) * 300)));
  });
  return (
    <div className="meter-row">
      <span id="mic-label">Microphone</span>
      <div
        className="meter"
        role="meter"
        aria-labelledby="mic-label"
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={level}
        aria-valuetext={track ? `level ${level} percent` : "microphone off"}
      >
        <div className="meter-fill" style={{ width: `${track ? level : 0}%` }} />
      </div>
    </div>
  );
}

const BARS = 7;

/// Bars dancing with the agent's voice; decorative for screen readers (the
/// agent's state is announced instead).
export function AgentVisualizer({ track, state }: { track: MediaStreamTrack | null; state: string }) {
  const [levels, setLevels] = useState<number[]>(() => new Array(BARS).fill(0));
  useEachFrame(track, 128, (analyser) => {
    const buffer = new Uint8Array(analyser.frequencyBinCount);
    return () => setLevels(bands(analyser, buffer, BARS));
  });
  return (
    <div className={`visualizer state-${state}`} aria-hidden="true">
      {levels.map((l, i) => (
        <span key={i} className="bar" style={{ height: `${10 + Math.round(l * 90)}%` }} />
      ))}
    </div>
  );
}
