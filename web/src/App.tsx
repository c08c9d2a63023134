// The app's screens and what they share: the signed-in token (kept for this
// tab only), the personas and balance, the call in progress or just ended.
// Any error is shown in words; a crash of a screen shows a message with a
// way back, never a blank page.
import { Component, type ReactNode, useCallback, useEffect, useState } from "react";
import { api, ApiError, type Balance, describe, type Persona, type SessionGrant } from "./api";
import { Call } from "./Call";
import { EndScreen } from "./EndScreen";
import { History } from "./History";
import { Home } from "./Home";
import { SignIn } from "./SignIn";
import type { CallEnd } from "./useCall";

type Screen = { name: "home" } | { name: "call"; grant: SessionGrant } | { name: "end"; end: CallEnd } | { name: "history" };

const TOKEN_KEY = "mindbot.token";

/// `#persona=<slug>` links a persona.
function linkedPersona(): string | null {
  const m = /persona=([a-z0-9-]+)/.exec(window.location.hash);
  return m ? m[1] : null;
}

export function App() {
  const [token, setToken] = useState<string | null>(() => sessionStorage.getItem(TOKEN_KEY));
  const [problem, setProblem] = useState<string | null>(null);
  const [personas, setPersonas] = useState<Persona[]>([]);
  const [balance, setBalance] = useState<Balance | null>(null);
  const [selected, setSelected] = useState<string | null>(linkedPersona);
  const [screen, setScreen] = useState<Screen>({ name: "home" });
  const [starting, setStarting] = useState(false);
  const [startError, setStartError] = useState<string | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);

  const signOut = useCallback((why: string | null) => {
    sessionStorage.removeItem(TOKEN_KEY);
    setToken(null);
    setProblem(why);
    setPersonas([]);
    setBalance(null);
    setSelected(linkedPersona());
    setScreen({ name: "home" });
  }, []);

  const failed = useCallback(
    (e: unknown) => {
      if (e instanceof ApiError && e.status === 401) signOut(`Signed out: ${e.message}`);
      else setLoadError(describe(e));
    },
    [signOut],
  );

  const load = useCallback(
    (t: string) => {
      setLoadError(null);
      api.personas(t).then((list) => {
        setPersonas(list);
        setSelected((s) => s ?? list[0]?.slug ?? null);
      }, failed);
      api.balance(t).then(setBalance, failed);
    },
    [failed],
  );

  useEffect(() => {
    if (token) load(token);
  }, [token, load]);

  // A persona link followed while the page is open.
  useEffect(() => {
    const follow = () => {
      const slug = linkedPersona();
      if (slug) setSelected(slug);
    };
    window.addEventListener("hashchange", follow);
    return () => window.removeEventListener("hashchange", follow);
  }, []);

  const signIn = (t: string) => {
    sessionStorage.setItem(TOKEN_KEY, t);
    setProblem(null);
    setToken(t);
  };

  const start = async () => {
    if (!token || !selected) return;
    setStarting(true);
    setStartError(null);
    try {
      setScreen({ name: "call", grant: await api.startSession(token, selected) });
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) signOut(`Signed out: ${e.message}`);
      else setStartError(describe(e));
    } finally {
      setStarting(false);
    }
  };

  const persona = (slug: string) => personas.find((p) => p.slug === slug);
  let body: ReactNode;
  if (!token) {
    body = <SignIn onToken={signIn} problem={problem} />;
  } else if (screen.name === "call") {
    body = (
      <Call grant={screen.grant} persona={persona(screen.grant.persona)} onEnd={(end) => setScreen({ name: "end", end })} />
    );
  } else if (screen.name === "end") {
    body = (
      <EndScreen
        token={token}
        end={screen.end}
        persona={persona(screen.end.persona)}
        onDone={() => {
          load(token);
          setScreen({ name: "home" });
        }}
      />
    );
  } else if (screen.name === "history") {
    body = <History token={token} personas={personas} />;
  } else {
    body = (
      <Home
        token={token}
        personas={personas}
        balance={balance}
        selected={selected}
        onSelect={setSelected}
        onStart={start}
        starting={starting}
        startError={startError}
        onBalanceChanged={() => load(token)}
      />
    );
  }
  const inCall = screen.name === "call";
  return (
    <>
      <header className="top">
        <h1>MindBot</h1>
        {token && !inCall && (
          <nav aria-label="Main">
            <button type="button" aria-current={screen.name === "home" ? "page" : undefined} onClick={() => { load(token); setScreen({ name: "home" }); }}>
              Personas
            </button>
            <button type="button" aria-current={screen.name === "history" ? "page" : undefined} onClick={() => setScreen({ name: "history" })}>
              History
            </button>
            <button type="button" onClick={() => signOut(null)}>
              Sign out
            </button>
          </nav>
        )}
      </header>
      <main>
        {loadError && token && (
          <p role="alert" className="error">
            {loadError}
          </p>
        )}
        <Boundary key={screen.name}>{body}</Boundary>
      </main>
    </>
  );
}

/// A screen that throws shows what went wrong and a way back.
class Boundary extends Component<{ children: ReactNode }, { error: string | null }> {
  state = { error: null as string | null };
  static getDerivedStateFromError(e: unknown) {
    return { error: describe(e) };
  }
  render() {
    if (this.state.error) {
      return (
        <section role="alert" className="card error">
          <h2>Something went wrong</h2>
          <p>{this.state.error}</p>
          <button type="button" onClick={() => window.location.reload()}>
            Reload
          </button>
        </section>
      );
    }
    return this.props.children;
  }
}
