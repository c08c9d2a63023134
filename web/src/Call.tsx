// The call screen: the agent's state and voice, the microphone, the live
// transcript of both sides, a box for typed turns, the balance counting down
// (on an ad-supported persona, how much of it is earned and how much paid).
import { type FormEvent, useEffect, useRef, useState } from "react";
import type { Persona, SessionGrant } from "./api";
import { clock, minutesSeconds } from "./format";
import { AgentVisualizer, MicMeter } from "./Meters";
import { type CallEnd, useCall } from "./useCall";

const STATE_TEXT: Record<string, string> = {
  connecting: "Connecting…",
  "waiting for the agent": "Waiting for the agent…",
  initializing: "Getting ready…",
  idle: "Idle",
  listening: "Listening",
  thinking: "Thinking",
  speaking: "Speaking",
  ended: "Call ending",
};

export function Call(props: { grant: SessionGrant; persona: Persona | undefined; onEnd: (end: CallEnd) => void }) {
  const { grant, persona } = props;
  const { view, send, hangUp, setMuted, audioBox } = useCall(grant, props.onEnd);
  const [muted, setMutedState] = useState(false);
  const [draft, setDraft] = useState("");
  const [sendError, setSendError] = useState<string | null>(null);
  const heading = useRef<HTMLHeadingElement>(null);
  const transcriptEnd = useRef<HTMLLIElement>(null);
  const remaining = useCountdown(view.balance, view.metered);
  const split = remaining === null ? null : earnedPaid(view.balance, remaining);

  // Effects return nothing but a cleanup (scrollIntoView returns a promise in newer browsers).
  useEffect(() => {
    heading.current?.focus();
  }, []);
  useEffect(() => {
    void transcriptEnd.current?.scrollIntoView({ block: "nearest" });
  }, [view.lines]);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const text = draft.trim();
    if (!text) return;
    setSendError(null);
    try {
      await send(text);
      setDraft("");
    } catch (err) {
      setSendError(`Your message was not sent: ${err instanceof Error ? err.message : String(err)}`);
    }
  };

  const name = persona?.name ?? grant.persona;
  return (
    <section className="call" aria-labelledby="call-heading">
      <h2 id="call-heading" ref={heading} tabIndex={-1}>
        Call with {name} <span className="muted">×{grant.multiplier}</span>
      </h2>
      {view.error && (
        <p role="alert" className="error">
          Could not join the call: {view.error}
        </p>
      )}
      <div className="call-top">
        <div className="agent-panel">
          <AgentVisualizer track={view.agentTrack} state={view.agentState} />
          <p className="agent-state" role="status" aria-live="polite" data-state={view.agentState}>
            <span className="visually-hidden">Agent state: </span>
            {STATE_TEXT[view.agentState] ?? view.agentState}
          </p>
        </div>
        <div className="balance-panel">
          <p className="countdown-label" id="countdown-label">
            Time left
          </p>
          <p
            className="countdown"
            aria-labelledby="countdown-label"
            data-seconds={remaining ?? ""}
            title={remaining === null ? undefined : minutesSeconds(remaining)}
          >
            {remaining === null ? "–:––" : clock(remaining)}
          </p>
          {split && (
            <p className="countdown-split" data-earned-seconds={split.earned} data-paid-seconds={split.paid}>
              of which earned {clock(split.earned)}, paid {clock(split.paid)}
            </p>
          )}
          {/* Announced once a minute and at the warnings, not every second. */}
          <p className="visually-hidden" aria-live="polite">
            {remaining !== null && remaining % 60 === 0
              ? `${minutesSeconds(remaining)} left` +
                (split ? `, of which ${minutesSeconds(split.earned)} earned and ${minutesSeconds(split.paid)} paid` : "")
              : ""}
          </p>
        </div>
      </div>
      {view.warning && (
        <p role="alert" className="warning">
          {view.warning}
        </p>
      )}
      <MicMeter track={muted ? null : view.micTrack} />
      <h3 id="transcript-heading">Transcript</h3>
      <ol className="transcript" role="log" aria-live="polite" aria-labelledby="transcript-heading">
        {view.lines.length === 0 && <li className="muted">The conversation appears here.</li>}
        {view.lines.map((l) => (
          <li key={l.id} className={`line ${l.who}${l.final ? "" : " partial"}`} data-who={l.who}>
            <span className="who">{l.who === "user" ? (l.typed ? "You (typed)" : "You") : name}:</span>{" "}
            <span className="text">{l.text}</span>
          </li>
        ))}
        <li ref={transcriptEnd} aria-hidden="true" className="end-marker" />
      </ol>
      <form className="chat" onSubmit={submit}>
        <label htmlFor="chat-input">Type a message</label>
        <div className="row">
          <input
            id="chat-input"
            value={draft}
            onChange={(e) => setDraft(e.target.value)}
            autoComplete="off"
            disabled={!view.connected}
          />
          <button type="submit" disabled={!view.connected || draft.trim() === ""}>
            Send
          </button>
        </div>
        {sendError && (
          <p role="alert" className="error">
            {sendError}
          </p>
        )}
      </form>
      <div className="row actions">
        <button
          type="button"
          aria-pressed={muted}
          onClick={() => {
            setMutedState(!muted);
            void setMuted(!muted);
          }}
        >
          {muted ? "Unmute microphone" : "Mute microphone"}
        </button>
        <button type="button" className="danger" onClick={hangUp}>
          Hang up
        </button>
      </div>
      <div ref={audioBox} hidden />
    </section>
  );
}

/// Whole seconds left, rounded up as a countdown shows them: the last
/// update's exact time left (`remaining_ms`; else its whole seconds) minus
/// the time since, ticking while the session is metered; every update
/// corrects it.
function useCountdown(
  balance: { seconds: number; ms: number | null; at: number } | null,
  metered: boolean,
): number | null {
  const [now, setNow] = useState(() => performance.now());
  useEffect(() => {
    if (!metered) return;
    const timer = setInterval(() => setNow(performance.now()), 250);
    return () => clearInterval(timer);
  }, [metered]);
  if (!balance) return null;
  if (!metered) return balance.seconds;
  const since = Math.max(0, now - balance.at);
  if (balance.ms !== null) return Math.max(0, Math.ceil((balance.ms - since) / 1000));
  return Math.max(0, balance.seconds - Math.floor(since / 1000));
}

/// Of the seconds left, those earned time still pays for and those paid
/// cards do, from the last update's split: earned time is spent first.
/// Null when the persona is not ad-supported (the update has no split).
function earnedPaid(
  balance: { seconds: number; earned: number | null } | null,
  remaining: number,
): { earned: number; paid: number } | null {
  if (!balance || balance.earned === null) return null;
  const spent = Math.max(0, balance.seconds - remaining);
  const earned = Math.min(remaining, Math.max(0, balance.earned - spent));
  return { earned, paid: remaining - earned };
}
