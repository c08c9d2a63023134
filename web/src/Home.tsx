// The home screen: the personas this user may pick (ad-supported ones
// marked), the balance in minutes and seconds at the chosen persona's
// multiplier (on an ad-supported one, how much is earned from ads and how
// much paid), card activation, and the button that starts a call.
import { type FormEvent, useState } from "react";
import { api, type Balance, describe, type Persona } from "./api";
import { minutesSeconds, secondsAt } from "./format";

export function Home(props: {
  token: string;
  personas: Persona[];
  balance: Balance | null;
  selected: string | null;
  onSelect: (slug: string) => void;
  onStart: () => void;
  starting: boolean;
  startError: string | null;
  onBalanceChanged: () => void;
}) {
  const { personas, balance, selected } = props;
  const persona = personas.find((p) => p.slug === selected);
  const multiplier = persona?.multiplier ?? "1";
  // The API's own figure for this persona (earned time counts only where ads
  // pay); a persona it does not list gets what paid cards buy.
  const affordable = balance?.personas.find((a) => a.persona === selected);
  const seconds = balance ? (affordable?.seconds ?? secondsAt(balance.paid_ms, multiplier)) : null;
  return (
    <>
      <section aria-labelledby="balance-heading" className="card">
        <h2 id="balance-heading">Balance</h2>
        <p className="balance" aria-live="polite">
          {seconds === null ? (
            "Loading…"
          ) : (
            <>
              <strong data-seconds={seconds}>{minutesSeconds(seconds)}</strong> with{" "}
              {persona ? persona.name : "the standard rate"} (×{multiplier})
              {affordable?.ad_supported ? (
                <span className="balance-split">
                  , of which <span data-earned-seconds={affordable.earned_seconds}>
                    {minutesSeconds(affordable.earned_seconds)}
                  </span>{" "}
                  earned from ads and{" "}
                  <span data-paid-seconds={affordable.paid_seconds}>{minutesSeconds(affordable.paid_seconds)}</span> paid
                </span>
              ) : (
                balance &&
                balance.earned_ms > 0 && (
                  <span className="balance-split muted"> (time earned from ads pays only with ad-supported personas)</span>
                )
              )}
            </>
          )}
        </p>
        <Activate token={props.token} onActivated={props.onBalanceChanged} />
      </section>
      <section aria-labelledby="personas-heading" className="card">
        <h2 id="personas-heading">Pick a persona</h2>
        <fieldset className="personas">
          <legend className="visually-hidden">Persona</legend>
          {personas.map((p) => (
            <label key={p.slug} className={`persona${p.slug === selected ? " selected" : ""}`}>
              <input
                type="radio"
                name="persona"
                value={p.slug}
                checked={p.slug === selected}
                onChange={() => props.onSelect(p.slug)}
              />
              <span className="persona-name">{p.name}</span>
              <span className="persona-meta">
                ×{p.multiplier} · {p.ratings > 0 ? `rated ${p.rating.toFixed(1)} of 5` : `rating ${p.rating.toFixed(1)}`}
                {p.ad_supported && <span className="ad-supported"> · ad-supported: ads earn talk time</span>}
              </span>
              <span className="persona-summary">{p.summary}</span>
            </label>
          ))}
          {selected && !persona && (
            <p className="muted">
              The linked persona “{selected}” is not in your list; you can still try to start a call with it.
            </p>
          )}
        </fieldset>
        {props.startError && (
          <p role="alert" className="error">
            {props.startError}
          </p>
        )}
        <button type="button" className="primary" onClick={props.onStart} disabled={!selected || props.starting}>
          {props.starting ? "Starting…" : `Start a call${persona ? ` with ${persona.name}` : ""}`}
        </button>
      </section>
    </>
  );
}

function Activate(props: { token: string; onActivated: () => void }) {
  const [code, setCode] = useState("");
  const [message, setMessage] = useState<{ ok: boolean; text: string } | null>(null);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setMessage(null);
    try {
      await api.activate(props.token, code);
      setMessage({ ok: true, text: "Card activated." });
      setCode("");
      props.onActivated();
    } catch (err) {
      setMessage({ ok: false, text: describe(err) });
    }
  };
  return (
    <form onSubmit={submit} className="activate">
      <label htmlFor="card-code">Activate a card code</label>
      <div className="row">
        <input id="card-code" value={code} onChange={(e) => setCode(e.target.value)} autoComplete="off" />
        <button type="submit" disabled={code.trim() === ""}>
          Activate
        </button>
      </div>
      {message && (
        <p role={message.ok ? "status" : "alert"} className={message.ok ? "ok" : "error"}>
          {message.text}
        </p>
      )}
    </form>
  );
}
