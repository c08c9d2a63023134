-- Sessions nobody pays for, and sessions paid twice (issue 11). Additive only.

-- A session token the API issued: a place held for the user until the worker
-- opens the session in that room (consumed_at) or the token expires
-- (expires_at, the token's TTL). `POST /v1/sessions` counts active sessions
-- plus unexpired, unconsumed reservations toward `max_open_sessions`, so a
-- user cannot hold rooms (and worker slots) with tokens alone.
CREATE TABLE session_reservations (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    room_name TEXT NOT NULL,
    persona_slug TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    expires_at TIMESTAMPTZ NOT NULL,
    -- Set when the worker opened (or refused) the session for this room.
    consumed_at TIMESTAMPTZ,
    CONSTRAINT session_reservations_expiry_after_creation CHECK (expires_at > created_at)
);
CREATE UNIQUE INDEX session_reservations_one_per_room ON session_reservations (room_name);
CREATE INDEX session_reservations_open_by_user ON session_reservations (user_id, expires_at)
    WHERE consumed_at IS NULL;

-- One active session per job (a re-offered job, an operator re-dispatch) and
-- per (room, user): a second open for either is refused, so nobody is metered
-- twice for one conversation.
CREATE UNIQUE INDEX voice_sessions_one_active_per_job ON voice_sessions (session_id)
    WHERE status = 'active';
CREATE UNIQUE INDEX voice_sessions_one_active_per_room_user ON voice_sessions (room_name, user_id)
    WHERE status = 'active';
