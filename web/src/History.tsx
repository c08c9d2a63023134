// Past sessions: when, with whom, how long, what it cost in card time; each
// can be rated (once: the API answers a second rating with its refusal).
import { useEffect, useState } from "react";
import { api, describe, type PastSession, type Persona } from "./api";
import { minutesSeconds, reasonText } from "./format";
import { RatingForm } from "./Rating";

export function History(props: { token: string; personas: Persona[] }) {
  const [sessions, setSessions] = useState<PastSession[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    api.sessions(props.token).then(setSessions, (e) => setError(describe(e)));
  }, [props.token]);
  const nameOf = (slug: string | null) => props.personas.find((p) => p.slug === slug)?.name ?? slug ?? "unknown";
  return (
    <section aria-labelledby="history-heading" className="card">
      <h2 id="history-heading">History</h2>
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
      {sessions === null && !error && <p>Loading…</p>}
      {sessions?.length === 0 && <p>No calls yet.</p>}
      <ul className="history">
        {sessions?.map((s) => (
          <li key={s.id} className="session" data-session={s.id}>
            <p>
              <strong>{nameOf(s.persona)}</strong> · {new Date(s.start_time).toLocaleString()}
            </p>
            <p>
              {minutesSeconds(s.duration_seconds)} · cost {minutesSeconds(Math.ceil(s.cost_ms / 1000))} of card time (×
              {s.multiplier})
              {s.end_reason ? ` · ${reasonText(s.end_reason)}` : ""}
            </p>
            {s.persona && s.duration_seconds > 0 && (
              <details>
                <summary>Rate this call</summary>
                <RatingForm token={props.token} persona={s.persona} sessionId={s.id} label="Your rating" />
              </details>
            )}
          </li>
        ))}
      </ul>
    </section>
  );
}
