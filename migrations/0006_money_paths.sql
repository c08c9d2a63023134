-- Money paths of the Stripe webhook (issue 11): disputes suspend a card,
-- refunds and lost disputes take back its unused time, and what Stripe says
-- about a payment is kept whatever order its events arrive in. Additive only,
-- like 0002: no seed column changes meaning, no seed CHECK changes.

-- A card whose payment is disputed pays for nothing until the dispute
-- closes. Its seed status stays what it was (the seed has no 'suspended'), so
-- a seed-only reader sees nothing new; the meter, balances and authorisation
-- skip a card while this is set.
ALTER TABLE time_cards ADD COLUMN suspended_at TIMESTAMPTZ;

-- Card time taken back without being spoken: what was left on a card when
-- its payment was refunded or lost in a dispute (the card becomes 'refunded',
-- balance zero). With it the ledger holds for every card:
--   total_minutes * 60000 - (remaining_minutes * 60000 + remaining_sub_ms)
--     = SUM(card_charges.charged_ms) + SUM(card_revocations.revoked_ms)
-- A card is revoked at most once (it is refunded afterwards).
CREATE TABLE card_revocations (
    time_card_id UUID PRIMARY KEY REFERENCES time_cards(id) ON DELETE CASCADE,
    revoked_ms BIGINT NOT NULL CHECK (revoked_ms >= 0),
    reason TEXT NOT NULL CHECK (reason IN ('refund', 'dispute_lost')),
    revoked_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

-- What Stripe said about a payment intent after the payment: refunds and
-- disputes, merged so that the order of their events does not matter (a
-- refund may arrive before its payment, a dispute's close before its
-- opening). A flag once set stays set; a closed dispute is never reopened.
-- The payment's card follows this row whenever either side arrives.
CREATE TABLE stripe_payment_outcomes (
    stripe_payment_intent_id TEXT PRIMARY KEY,
    refunded BOOLEAN NOT NULL DEFAULT FALSE,
    partially_refunded BOOLEAN NOT NULL DEFAULT FALSE,
    dispute TEXT CHECK (dispute IN ('open', 'won', 'lost')),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
