// Sign in: paste the app's JWT (what the MindBot apps get from their auth
// provider), or, when the server has `api.dev_login` on, sign in as the demo user.
import { type FormEvent, useEffect, useState } from "react";
import { api, describe } from "./api";

export function SignIn(props: { onToken: (token: string) => void; problem: string | null }) {
  const [token, setToken] = useState("");
  const [dev, setDev] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    void api.devLoginAvailable().then(setDev);
  }, []);

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const t = token.trim().replace(/^Bearer\s+/i, "");
    if (!t) {
      setError("Paste your sign-in token first.");
      return;
    }
    props.onToken(t);
  };
  const devSignIn = async () => {
    setBusy(true);
    setError(null);
    try {
      props.onToken((await api.devLogin()).token);
    } catch (e) {
      setError(describe(e));
    } finally {
      setBusy(false);
    }
  };

  const shown = error ?? props.problem;
  return (
    <section aria-labelledby="signin-heading" className="card">
      <h2 id="signin-heading">Sign in</h2>
      {shown && (
        <p role="alert" className="error">
          {shown}
        </p>
      )}
      {dev && (
        <div className="dev">
          <p>This server runs the local demo.</p>
          <button type="button" onClick={devSignIn} disabled={busy}>
            Dev sign-in as the demo user
          </button>
        </div>
      )}
      <form onSubmit={submit}>
        <label htmlFor="token">Your MindBot sign-in token (JWT)</label>
        <textarea id="token" rows={4} value={token} onChange={(e) => setToken(e.target.value)} spellCheck={false} />
        <button type="submit">Sign in</button>
      </form>
    </section>
  );
}
