-- What the public HTTP API (/v1) adds to the schema. Additive only, like 0002.

-- A rating belongs to one session: one rating per user, persona and session.
-- Ratings written before this column (or by a seed-only app) have no session
-- and are not constrained.
ALTER TABLE persona_ratings
    ADD COLUMN voice_session_id UUID REFERENCES voice_sessions(id) ON DELETE SET NULL;
CREATE UNIQUE INDEX persona_ratings_one_per_session
    ON persona_ratings (user_id, persona_slug, voice_session_id)
    WHERE voice_session_id IS NOT NULL;
CREATE INDEX persona_ratings_by_slug ON persona_ratings (persona_slug);

-- Stripe events already handled: a replayed event (same id) changes nothing.
CREATE TABLE stripe_events (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

-- One local row per Stripe subscription, kept current by its events. Stripe
-- does not promise order: the creation time of the event last applied lets
-- an older event arriving late change nothing.
ALTER TABLE user_subscriptions ADD COLUMN stripe_event_created TIMESTAMPTZ;
CREATE UNIQUE INDEX user_subscriptions_one_per_stripe_id
    ON user_subscriptions (stripe_subscription_id)
    WHERE stripe_subscription_id IS NOT NULL;

