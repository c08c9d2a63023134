-- What the metering engine adds to the seed schema. Additive only: no seed
-- column changes meaning, every new column is nullable or has a default, so an
-- application written against the seed keeps working.

-- Exact balances. A card's balance in milliseconds of talk time is
--   remaining_minutes * 60000 + remaining_sub_ms
-- so `remaining_minutes` is, by construction, the whole minutes of the exact
-- balance. A row written by a seed-only application has remaining_sub_ms = 0,
-- which is exactly what it meant.
ALTER TABLE time_cards
    ADD COLUMN remaining_sub_ms INTEGER NOT NULL DEFAULT 0
        CONSTRAINT time_cards_remaining_sub_ms_range
        CHECK (remaining_sub_ms >= 0 AND remaining_sub_ms < 60000);

-- One card per Stripe payment intent: a replayed payment webhook cannot mint
-- a second card.
CREATE UNIQUE INDEX time_cards_one_per_payment_intent
    ON time_cards (stripe_payment_intent_id)
    WHERE stripe_payment_intent_id IS NOT NULL;

-- Cards a user can draw from, found by user.
CREATE INDEX time_cards_active_by_user ON time_cards (user_id) WHERE status = 'active';

-- `time_cards.user_id` is NOT NULL in the seed, yet cards are issued before
-- anyone buys them. Unclaimed cards belong to this inactive owner until a user
-- activates the code; activation moves them to that user.
INSERT INTO users (id, email, full_name, password_hash, is_active, email_verified)
VALUES ('00000000-0000-0000-0000-000000000000', 'unclaimed-cards@mindbot.invalid',
        'Unclaimed time cards', '!', FALSE, FALSE);

-- Metering state of a voice session.
ALTER TABLE voice_sessions
    ADD COLUMN persona_slug TEXT,
    -- Charge for one metered second, in milliseconds of card time:
    -- the persona's cost multiplier times 1000 (multipliers have at most
    -- three decimals, so this is exact).
    ADD COLUMN rate_ms_per_second BIGINT NOT NULL DEFAULT 1000
        CONSTRAINT voice_sessions_rate_positive CHECK (rate_ms_per_second > 0),
    -- Sequence number of the last applied tick: a tick carries the range of
    -- sequence numbers it covers, so a retried or replayed tick applies once.
    ADD COLUMN last_tick_seq BIGINT NOT NULL DEFAULT 0
        CONSTRAINT voice_sessions_tick_seq_nonneg CHECK (last_tick_seq >= 0),
    -- Live time (user and agent both in the room) covered by applied ticks.
    ADD COLUMN metered_ms BIGINT NOT NULL DEFAULT 0
        CONSTRAINT voice_sessions_metered_nonneg CHECK (metered_ms >= 0),
    -- Exact total charged to the user's cards, in milliseconds.
    ADD COLUMN charged_ms BIGINT NOT NULL DEFAULT 0
        CONSTRAINT voice_sessions_charged_nonneg CHECK (charged_ms >= 0),
    ADD COLUMN heartbeat_at TIMESTAMPTZ,
    ADD COLUMN worker_id TEXT,
    ADD COLUMN end_reason TEXT
        CONSTRAINT voice_sessions_end_reason_known CHECK (end_reason IN (
            'user_left', 'balance_exhausted', 'time_limit', 'daily_limit',
            'shutdown', 'room_closed', 'agent_removed', 'db_unavailable',
            'orphaned', 'error'));

-- Live sessions are updated every tick: leave room on each page so those
-- updates stay heap-only (HOT), and index no column a tick changes (the
-- reaper's heartbeat scan reads the active-room index instead).
ALTER TABLE voice_sessions SET (fillfactor = 70);
ALTER TABLE time_cards SET (fillfactor = 70);
CREATE INDEX voice_sessions_active_room ON voice_sessions (room_name)
    WHERE status = 'active';
CREATE INDEX voice_sessions_user_start ON voice_sessions (user_id, start_time DESC);

-- The ledger: what each session took from each card, exactly. For every card,
--   total_minutes * 60000 - (remaining_minutes * 60000 + remaining_sub_ms)
--     = SUM(card_charges.charged_ms)
-- (a refunded card: its balance is zero and nothing was ever charged).
-- One row per (session, card), grown by every tick that draws from the card.
CREATE TABLE card_charges (
    voice_session_id UUID NOT NULL REFERENCES voice_sessions(id) ON DELETE CASCADE,
    time_card_id UUID NOT NULL REFERENCES time_cards(id) ON DELETE CASCADE,
    charged_ms BIGINT NOT NULL CHECK (charged_ms >= 0),
    first_charged_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    last_charged_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (voice_session_id, time_card_id)
) WITH (fillfactor = 70);
CREATE INDEX card_charges_by_card ON card_charges (time_card_id);

-- Failed activation attempts, to rate-limit code guessing per user across
-- every worker and API node.
CREATE TABLE card_activation_failures (
    user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    attempted_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX card_activation_failures_by_user ON card_activation_failures (user_id, attempted_at);

-- Daily usage limits sum today's persona sessions of one user and persona.
CREATE INDEX persona_sessions_user_slug_day ON persona_sessions (user_id, persona_slug, created_at);
