// The /v1 API, on this page's own origin. Every failure becomes an ApiError
// carrying the API's JSON error code and message (or a sentence saying what
// went wrong on the way), so screens can show it in words.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

export interface Persona {
  slug: string;
  name: string;
  summary: string;
  category: string;
  access_level: string;
  multiplier: string;
  rating: number;
  ratings: number;
  session_time_limit: number | null;
  daily_usage_limit: number | null;
  /// Whether time earned from rewarded ads pays for calls with it.
  ad_supported: boolean;
}

/// What the balance buys with one persona: `seconds` in all, of which
/// `earned_seconds` earned from ads (spent first; 0 unless ad-supported).
export interface Affordable {
  persona: string;
  multiplier: string;
  seconds: number;
  ad_supported: boolean;
  earned_seconds: number;
  paid_seconds: number;
}

export interface Balance {
  balance_ms: number;
  balance_minutes: number;
  paid_ms: number;
  earned_ms: number;
  personas: Affordable[];
}

export interface SessionGrant {
  livekit_url: string;
  room: string;
  token: string;
  persona: string;
  multiplier: string;
  seconds_available: number;
}

export interface PastSession {
  id: string;
  persona: string | null;
  status: string;
  end_reason: string | null;
  start_time: string;
  end_time: string | null;
  duration_seconds: number;
  cost_ms: number;
  multiplier: string;
  quality_rating: number | null;
}

async function call<T>(method: string, path: string, token: string | null, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (token) headers["Authorization"] = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response: Response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, "network", "The server could not be reached. Check your connection and try again.");
  }
  const text = await response.text();
  let json: unknown = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON: described below.
  }
  if (!response.ok) {
    const e = json as { error?: string; message?: string; field?: string } | null;
    if (e && typeof e.message === "string") {
      throw new ApiError(response.status, e.error ?? "error", e.message, e.field);
    }
    throw new ApiError(response.status, "http_" + response.status, `The server answered ${response.status} ${response.statusText}.`);
  }
  return json as T;
}

export const api = {
  devLoginAvailable: async (): Promise<boolean> => {
    try {
      await call("GET", "/v1/dev/login", null);
      return true;
    } catch {
      return false;
    }
  },
  devLogin: () => call<{ token: string; user_id: string }>("POST", "/v1/dev/login", null),
  personas: (t: string) => call<{ personas: Persona[] }>("GET", "/v1/personas", t).then((r) => r.personas),
  balance: (t: string) => call<Balance>("GET", "/v1/me/balance", t),
  activate: (t: string, code: string) => call<unknown>("POST", "/v1/cards/activate", t, { code }),
  /// A room and token through the token-source endpoint, in the request shape
  /// of LiveKit's `TokenSource.endpoint` (the persona in the agent dispatch's
  /// metadata); same checks and errors as `POST /v1/sessions`.
  startSession: async (t: string, persona: string): Promise<SessionGrant> => {
    const r = await call<{
      server_url: string;
      participant_token: string;
      room_name: string;
      persona: string;
      multiplier: string;
      seconds_available: number;
    }>("POST", "/v1/token-source", t, { room_config: { agents: [{ metadata: JSON.stringify({ persona }) }] } });
    return {
      livekit_url: r.server_url,
      token: r.participant_token,
      room: r.room_name,
      persona: r.persona,
      multiplier: r.multiplier,
      seconds_available: r.seconds_available,
    };
  },
  sessions: (t: string) =>
    call<{ sessions: PastSession[] }>("GET", "/v1/me/sessions?limit=50", t).then((r) => r.sessions),
  rate: (t: string, slug: string, session_id: string, rating: number, feedback: string) =>
    call<unknown>("POST", `/v1/personas/${encodeURIComponent(slug)}/ratings`, t, {
      session_id,
      rating,
      feedback: feedback.trim() === "" ? undefined : feedback,
    }),
};

/// What went wrong, in words, whatever was thrown.
export function describe(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}
