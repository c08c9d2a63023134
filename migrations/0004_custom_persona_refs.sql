-- What custom personas' owners need (DELETE /v1/me/personas/{slug}). Additive
-- only, like 0002 and 0003: two indexes, no column changes.

-- A custom persona that any session used is retired (is_active false)
-- instead of deleted, so its sessions keep naming it. Whether one did is a
-- lookup by slug in both session tables. Ticks never write persona_slug, so
-- this index leaves their heap-only updates alone.
CREATE INDEX voice_sessions_by_persona ON voice_sessions (persona_slug);
CREATE INDEX persona_sessions_by_persona ON persona_sessions (persona_slug);
