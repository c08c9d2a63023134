// One call: joins the LiveKit room with the session grant, publishes the
// microphone, and follows what the agent says through LiveKit's agent
// conventions (participant attribute `lk.agent.state`, text streams on
// `lk.transcription`, typed turns sent on `lk.chat`) and our own data topics
// (`mindbot.session`: started / refused / ended; `mindbot.balance`: balance,
// warnings). It knows nothing of how things are drawn.
import { useCallback, useEffect, useRef, useState } from "react";
import {
  DisconnectReason,
  type Participant,
  ParticipantKind,
  type RemoteTrack,
  Room,
  RoomEvent,
  Track,
} from "livekit-client";
import type { SessionGrant } from "./api";

export interface Line {
  id: string;
  who: "user" | "agent";
  text: string;
  final: boolean;
  typed?: boolean;
}

export interface CallEnd {
  reason: string;
  detail?: string;
  sessionId: string | null;
  persona: string;
  seconds: number;
}

export interface CallView {
  connected: boolean;
  agentJoined: boolean;
  agentState: string;
  lines: Line[];
  /// Seconds of balance left as last told, and when (performance.now());
  /// on an ad-supported persona, how many of them earned time pays for.
  balance: { seconds: number; ms: number | null; at: number; earned: number | null } | null;
  metered: boolean;
  warning: string | null;
  micTrack: MediaStreamTrack | null;
  agentTrack: MediaStreamTrack | null;
  error: string | null;
}

const TRANSCRIPTION = "lk.transcription";
const CHAT = "lk.chat";

export function useCall(grant: SessionGrant, onEnd: (end: CallEnd) => void) {
  const [view, setView] = useState<CallView>({
    connected: false,
    agentJoined: false,
    agentState: "connecting",
    lines: [],
    balance: null,
    metered: false,
    warning: null,
    micTrack: null,
    agentTrack: null,
    error: null,
  });
  const roomRef = useRef<Room | null>(null);
  const audioBox = useRef<HTMLDivElement | null>(null);
  const onEndRef = useRef(onEnd);
  onEndRef.current = onEnd;

  useEffect(() => {
    const room = new Room({ adaptiveStream: false, dynacast: false });
    roomRef.current = room;
    let ended = false;
    let sessionId: string | null = null;
    let endReason: { reason: string; detail?: string } | null = null;
    let startedAt: number | null = null;
    const patch = (p: Partial<CallView> | ((v: CallView) => Partial<CallView>)) =>
      setView((v) => ({ ...v, ...(typeof p === "function" ? p(v) : p) }));
    const upsertLine = (line: Line) =>
      patch((v) => {
        const i = v.lines.findIndex((l) => l.id === line.id);
        if (i < 0) return { lines: [...v.lines, line] };
        const lines = v.lines.slice();
        lines[i] = line;
        return { lines };
      });
    const finish = (fallback: string) => {
      if (ended) return;
      ended = true;
      const r = endReason ?? { reason: fallback };
      const seconds = startedAt === null ? 0 : Math.round((performance.now() - startedAt) / 1000);
      onEndRef.current({ ...r, sessionId, persona: grant.persona, seconds });
    };
    const isAgent = (p: Participant) => p.kind === ParticipantKind.AGENT || "lk.agent.state" in p.attributes;
    const readState = (p: Participant) => {
      const s = p.attributes["lk.agent.state"];
      if (s) patch({ agentState: s });
    };

    room.registerTextStreamHandler(TRANSCRIPTION, async (reader, from) => {
      const attrs = reader.info.attributes ?? {};
      const trackId = attrs["lk.transcribed_track_id"];
      const mine = [...room.localParticipant.trackPublications.values()].some((t) => t.trackSid === trackId);
      const who: Line["who"] = from.identity === room.localParticipant.identity || mine ? "user" : "agent";
      const id = attrs["lk.segment_id"] ?? reader.info.id;
      let text = "";
      try {
        for await (const chunk of reader) {
          text += chunk;
          upsertLine({ id, who, text, final: false });
        }
      } catch {
        // A stream cut short (hang-up): keep what came.
      }
      // The stream's end is the segment's end (`lk.transcription_final` marks it too).
      upsertLine({ id, who, text, final: true });
    });

    room
      .on(RoomEvent.DataReceived, (payload, _participant, _kind, topic) => {
        if (topic !== "mindbot.session" && topic !== "mindbot.balance") return;
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(new TextDecoder().decode(payload));
        } catch {
          return;
        }
        const type = String(msg.type ?? "");
        if (topic === "mindbot.balance" && typeof msg.remaining_seconds === "number") {
          const earned = typeof msg.earned_seconds === "number" ? msg.earned_seconds : null;
          const ms = typeof msg.remaining_ms === "number" ? msg.remaining_ms : null;
          patch({ balance: { seconds: msg.remaining_seconds, ms, at: performance.now(), earned } });
          if (type === "warning") {
            patch({ warning: `About ${msg.remaining_seconds} seconds of balance left.` });
          } else if (type === "extended") {
            patch({ warning: null });
          }
        } else if (type === "started") {
          sessionId = typeof msg.session === "string" ? msg.session : null;
          startedAt = performance.now();
          patch({ metered: true });
        } else if (type === "refused" || type === "ended") {
          endReason = {
            reason: String(msg.reason ?? type),
            detail: typeof msg.detail === "string" ? msg.detail : undefined,
          };
          if (type === "ended") patch({ agentState: "ended" });
          // At zero the balance is zero: the countdown shows it for the
          // moment before the agent hangs up, whatever its own tick says.
          if (type === "ended" && endReason.reason === "balance_exhausted") {
            patch((v) => ({
              balance: v.balance && { ...v.balance, seconds: 0, ms: 0, at: performance.now(), earned: v.balance.earned === null ? null : 0 },
            }));
          }
        }
      })
      .on(RoomEvent.ParticipantConnected, (p) => {
        if (isAgent(p)) {
          patch({ agentJoined: true });
          readState(p);
        }
      })
      .on(RoomEvent.ParticipantAttributesChanged, (_changed, p) => {
        if (isAgent(p)) readState(p);
      })
      .on(RoomEvent.ParticipantDisconnected, (p) => {
        if (isAgent(p)) {
          // The agent hangs up after its `ended` message; its leaving ends the call.
          if (endReason) void room.disconnect();
        }
      })
      .on(RoomEvent.TrackSubscribed, (track: RemoteTrack, _pub, p) => {
        if (track.kind !== Track.Kind.Audio) return;
        const el = track.attach();
        el.setAttribute("data-participant", p.identity);
        audioBox.current?.appendChild(el);
        if (isAgent(p)) patch({ agentTrack: track.mediaStreamTrack });
      })
      .on(RoomEvent.TrackUnsubscribed, (track: RemoteTrack) => {
        track.detach().forEach((el) => el.remove());
      })
      .on(RoomEvent.Disconnected, (reason?: DisconnectReason) => {
        const fallback =
          reason === DisconnectReason.CLIENT_INITIATED
            ? "left"
            : reason === DisconnectReason.ROOM_DELETED
              ? "room_closed"
              : reason === DisconnectReason.PARTICIPANT_REMOVED
                ? "agent_removed"
                : "connection_lost";
        patch({ connected: false });
        finish(fallback);
      });

    (async () => {
      try {
        await room.connect(grant.livekit_url, grant.token);
        patch({ connected: true, agentState: "waiting for the agent" });
        for (const p of room.remoteParticipants.values()) {
          if (isAgent(p)) {
            patch({ agentJoined: true });
            readState(p);
          }
        }
        await room.startAudio();
        await room.localParticipant.setMicrophoneEnabled(true);
        const mic = room.localParticipant.getTrackPublication(Track.Source.Microphone)?.track;
        patch({ micTrack: mic?.mediaStreamTrack ?? null });
      } catch (e) {
        patch({ error: e instanceof Error ? e.message : String(e) });
        if (room.state !== "disconnected") await room.disconnect();
        else finish("connection_lost");
      }
    })();

    return () => {
      ended = true;
      room.unregisterTextStreamHandler(TRANSCRIPTION);
      void room.disconnect();
    };
  }, [grant]);

  const send = useCallback(async (text: string) => {
    const room = roomRef.current;
    if (!room || text.trim() === "") return;
    const info = await room.localParticipant.sendText(text, { topic: CHAT });
    setView((v) => ({
      ...v,
      lines: [...v.lines, { id: `chat-${info.id}`, who: "user", text, final: true, typed: true }],
    }));
  }, []);

  const hangUp = useCallback(() => {
    void roomRef.current?.disconnect();
  }, []);

  const setMuted = useCallback(async (muted: boolean) => {
    await roomRef.current?.localParticipant.setMicrophoneEnabled(!muted);
  }, []);

  return { view, send, hangUp, setMuted, audioBox };
}
