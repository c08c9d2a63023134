-- Rewarded ads (issue 17): a completed ad view the ad server vouches for
-- earns talk time, kept as a time card of its own kind that only sessions
-- with ad-supported personas draw on. Additive only, like 0002: every new
-- column is nullable or defaulted, no seed column changes meaning.

-- What paid for a card: 'paid' (bought or activated from a code, as every
-- seed-era card) or 'earned' (rewarded ad views). An earned card is drawn
-- only by sessions with `ad_supported`, before that session's paid cards,
-- and goes through the same ledger (card_charges) and audit as any card.
ALTER TABLE time_cards
    ADD COLUMN kind TEXT NOT NULL DEFAULT 'paid'
        CONSTRAINT time_cards_kind_known CHECK (kind IN ('paid', 'earned'));

-- Whether the session's persona was ad-supported when it opened: the one
-- kind of session earned cards may pay for.
ALTER TABLE voice_sessions ADD COLUMN ad_supported BOOLEAN NOT NULL DEFAULT FALSE;

-- An ad interaction, as the client reported it (source 'client', earns
-- nothing) or as the ad server's signed callback confirmed it (source
-- 'callback', with the ad network's view id). A confirmed, completed view of
-- a rewarded type earns `rewarded_seconds` on the card `time_card_id`, on
-- the local day `reward_day` (personas.timezone), when that day's rewards
-- stay within `reward_cap_seconds` (ads.daily_reward_cap when granted).
ALTER TABLE ad_interactions
    ADD COLUMN source TEXT NOT NULL DEFAULT 'client'
        CONSTRAINT ad_interactions_source_known CHECK (source IN ('client', 'callback')),
    ADD COLUMN ad_view_id TEXT,
    ADD COLUMN persona_slug TEXT,
    ADD COLUMN rewarded_seconds INTEGER NOT NULL DEFAULT 0
        CONSTRAINT ad_interactions_rewarded_nonneg CHECK (rewarded_seconds >= 0),
    ADD COLUMN reward_day DATE,
    ADD COLUMN reward_cap_seconds INTEGER,
    ADD COLUMN time_card_id UUID REFERENCES time_cards(id) ON DELETE SET NULL;

-- One confirmed interaction per ad view: a replayed callback earns nothing.
CREATE UNIQUE INDEX ad_interactions_one_per_view
    ON ad_interactions (ad_view_id) WHERE source = 'callback';
-- Today's rewards of a user (the daily cap), and the operator's report.
CREATE INDEX ad_interactions_user_day ON ad_interactions (user_id, reward_day) WHERE rewarded_seconds > 0;
CREATE INDEX ad_interactions_created ON ad_interactions (created_at);
