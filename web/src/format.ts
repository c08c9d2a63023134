// Small pure helpers: durations, money in card time, end reasons in words.

/// `m:ss` (or `h:mm:ss`) of a whole number of seconds.
export function clock(totalSeconds: number): string {
  const s = Math.max(0, Math.floor(totalSeconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

/// "2 min 05 s" for screen readers and labels.
export function minutesSeconds(totalSeconds: number): string {
  const s = Math.max(0, Math.floor(totalSeconds));
  return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
}

/// Whole seconds a balance pays for at a multiplier given as exact decimal
/// text ("1.5" is 1500 ms of card time per second), integer arithmetic.
export function secondsAt(balanceMs: number, multiplier: string): number {
  const [whole, frac = ""] = multiplier.split(".");
  const rate = Number(whole) * 1000 + Number((frac + "000").slice(0, 3));
  return rate > 0 ? Math.floor(balanceMs / rate) : 0;
}

const REASONS: Record<string, string> = {
  balance_exhausted: "Your balance ran out.",
  time_limit: "This persona's session time limit was reached.",
  daily_limit: "Your daily limit with this persona was reached.",
  user_left: "You left the call.",
  left: "You left the call.",
  shutdown: "The service is restarting; the call was ended.",
  room_closed: "The call's room was closed.",
  agent_removed: "The agent left the call.",
  db_unavailable: "The service had a problem keeping your balance; the call was ended and you were not charged beyond it.",
  orphaned: "The agent's server stopped; the call was ended and charged only up to then.",
  error: "The call ended because of an error.",
  insufficient_balance: "Your balance is too low for this persona.",
  access_denied: "Your plan does not include this persona.",
  age_restricted: "This persona is not available at your age.",
  persona_changed: "This persona changed since you picked it; pick it again.",
  persona_session_open: "You already have a call open with this persona.",
  connection_lost: "The connection to the call was lost.",
};

/// An end (or refusal) reason in words; unknown codes are shown as they are.
export function reasonText(reason: string): string {
  return REASONS[reason] ?? `The call ended (${reason}).`;
}
