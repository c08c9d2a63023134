-- How much of the agent's talking each session was forgiven at leaves the
-- user's own client could have timed (it stopped sending audio and
-- listened on, then left, or let the card run out): see
-- metering::meter::state::FORGIVE_LIMIT. At most 5 s per session; the
-- sessions a user started in the last hour bound what the next one may be
-- forgiven, so a client cannot gain those seconds again and again by
-- opening new sessions.
ALTER TABLE voice_sessions
    ADD COLUMN forgiven_ms BIGINT NOT NULL DEFAULT 0
        CONSTRAINT voice_sessions_forgiven_range CHECK (forgiven_ms >= 0 AND forgiven_ms <= 5000);
