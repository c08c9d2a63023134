// A 1-5 rating with optional feedback for one session
// (`POST /v1/personas/{slug}/ratings`); the API's refusal is shown in words.
import { type FormEvent, useState } from "react";
import { api, describe } from "./api";

export function RatingForm(props: { token: string; persona: string; sessionId: string; label: string }) {
  const [rating, setRating] = useState<number | null>(null);
  const [feedback, setFeedback] = useState("");
  const [result, setResult] = useState<{ ok: boolean; text: string } | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (rating === null) {
      setResult({ ok: false, text: "Pick from 1 to 5 stars first." });
      return;
    }
    setBusy(true);
    setResult(null);
    try {
      await api.rate(props.token, props.persona, props.sessionId, rating, feedback);
      setResult({ ok: true, text: "Thank you, your rating was recorded." });
    } catch (err) {
      setResult({ ok: false, text: describe(err) });
    } finally {
      setBusy(false);
    }
  };
  const group = `rating-${props.sessionId}`;
  return (
    <form onSubmit={submit} className="rating">
      <fieldset>
        <legend>{props.label}</legend>
        <div className="stars">
          {[1, 2, 3, 4, 5].map((n) => (
            <label key={n}>
              <input type="radio" name={group} value={n} checked={rating === n} onChange={() => setRating(n)} />
              {n}
              <span className="visually-hidden"> of 5</span>
            </label>
          ))}
        </div>
      </fieldset>
      <label htmlFor={`${group}-feedback`}>Feedback (optional)</label>
      <textarea
        id={`${group}-feedback`}
        rows={2}
        maxLength={2000}
        value={feedback}
        onChange={(e) => setFeedback(e.target.value)}
      />
      <button type="submit" disabled={busy || result?.ok === true}>
        Send rating
      </button>
      {result && (
        <p role={result.ok ? "status" : "alert"} className={result.ok ? "ok" : "error"}>
          {result.text}
        </p>
      )}
    </form>
  );
}
