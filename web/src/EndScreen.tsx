// After a call: why it ended, in words, and a rating for that session.
import { useEffect, useRef } from "react";
import type { Persona } from "./api";
import { minutesSeconds, reasonText } from "./format";
import { RatingForm } from "./Rating";
import type { CallEnd } from "./useCall";

export function EndScreen(props: { token: string; end: CallEnd; persona: Persona | undefined; onDone: () => void }) {
  const { end } = props;
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    heading.current?.focus();
  }, []);
  const name = props.persona?.name ?? end.persona;
  return (
    <section aria-labelledby="end-heading" className="card end">
      <h2 id="end-heading" ref={heading} tabIndex={-1}>
        Call ended
      </h2>
      <p className="end-reason" role="status" data-reason={end.reason}>
        {reasonText(end.reason)}
        {end.detail ? ` ${end.detail}` : ""}
      </p>
      {end.sessionId && <p>You talked with {name} for {minutesSeconds(end.seconds)}.</p>}
      {end.sessionId && (
        <RatingForm
          token={props.token}
          persona={end.persona}
          sessionId={end.sessionId}
          label={`How was your call with ${name}?`}
        />
      )}
      <button type="button" className="primary" onClick={props.onDone}>
        Back to personas
      </button>
    </section>
  );
}
