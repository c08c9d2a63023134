//! Which card pays, as pure logic: the meter's store locks a user's cards and
//! hands them here; the result says what to take from each.
//!
//! Order: active cards that have not expired and hold a balance, the soonest
//! `expires_at` first (cards without expiry last), then the oldest, then by
//! id so the order is total. A card reaching zero becomes `used` and the next
//! card pays the rest of the same charge.
//!
//! Earned cards (rewarded ad time) pay only for sessions of ad-supported
//! personas, and there they pay first, in the same order among themselves;
//! paid cards pay the rest.

use chrono::{DateTime, Utc};

use crate::ids::CardId;
use crate::money::Millis;

/// A card as the allocator sees it, balance already locked by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct CardState {
    pub id: CardId,
    pub balance: Millis,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Set when the allocator drew it to zero.
    pub used_up: bool,
    /// Set when it was found past `expires_at`: never drawn again.
    pub expired: bool,
    /// Whether the allocator changed it (balance or status).
    pub touched: bool,
    /// Earned by rewarded ads: drawn only for ad-supported sessions.
    pub earned: bool,
}

impl CardState {
    pub fn new(id: CardId, balance: Millis, expires_at: Option<DateTime<Utc>>, created_at: DateTime<Utc>) -> Self {
        CardState { id, balance, expires_at, created_at, used_up: false, expired: false, touched: false, earned: false }
    }

    /// An earned card (see [`CardState::earned`]).
    pub fn earned(mut self, earned: bool) -> Self {
        self.earned = earned;
        self
    }
}

/// What a user can spend, by kind of card.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Funds {
    /// Paid cards: spendable on every persona.
    pub paid: Millis,
    /// Earned cards: spendable only on ad-supported personas.
    pub earned: Millis,
}

impl Funds {
    /// What a session may spend: paid, plus earned when its persona is ad-supported.
    pub fn for_session(&self, ad_supported: bool) -> Millis {
        if ad_supported {
            Millis(self.paid.0 + self.earned.0)
        } else {
            self.paid
        }
    }
}

/// A user's drawable cards in paying order; cards past their expiry at `now`
/// are marked expired (and touched, so the store writes their status).
pub fn order_cards(cards: &mut [CardState], now: DateTime<Utc>) {
    for c in cards.iter_mut() {
        if c.expires_at.is_some_and(|e| e <= now) && !c.expired {
            c.expired = true;
            c.touched = true;
        }
    }
    cards.sort_by(|a, b| {
        let ka = (a.expires_at.is_none(), a.expires_at, a.created_at, a.id);
        let kb = (b.expires_at.is_none(), b.expires_at, b.created_at, b.id);
        ka.cmp(&kb)
    });
}

/// What the user can spend now: the sums of drawable balances, by kind.
pub fn spendable(cards: &[CardState]) -> Funds {
    let sum = |earned: bool| {
        Millis(
            cards.iter().filter(|c| !c.expired && !c.used_up && c.earned == earned).map(|c| c.balance.0.max(0)).sum(),
        )
    };
    Funds { paid: sum(false), earned: sum(true) }
}

/// Take `amount` from `cards` (already ordered) and return what was taken
/// from each card: earned cards first when `earned_ok` (an ad-supported
/// session), never otherwise, then paid cards. Never takes a card below
/// zero: if the cards hold less than `amount`, everything they may pay is
/// taken and the shortfall is the caller's to report (the user is not
/// charged for it).
pub fn draw(cards: &mut [CardState], amount: Millis, earned_ok: bool) -> Vec<(CardId, Millis)> {
    let mut left = amount.0.max(0);
    let mut taken = Vec::new();
    let passes: &[bool] = if earned_ok { &[true, false] } else { &[false] };
    for &earned in passes {
        draw_kind(cards, earned, &mut left, &mut taken);
    }
    taken
}

fn draw_kind(cards: &mut [CardState], earned: bool, left: &mut i64, taken: &mut Vec<(CardId, Millis)>) {
    for c in cards.iter_mut().filter(|c| !c.expired && !c.used_up && c.balance.0 > 0 && c.earned == earned) {
        if *left == 0 {
            break;
        }
        let take = (*left).min(c.balance.0);
        c.balance = Millis(c.balance.0 - take);
        c.touched = true;
        if c.balance.0 == 0 {
            c.used_up = true;
        }
        *left -= take;
        taken.push((c.id, Millis(take)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use uuid::Uuid;

    fn t(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, h, 0, 0).unwrap()
    }

    fn card(n: u128, bal: i64, exp: Option<DateTime<Utc>>, created: DateTime<Utc>) -> CardState {
        CardState::new(CardId(Uuid::from_u128(n)), Millis(bal), exp, created)
    }

    #[test]
    fn soonest_expiry_pays_first_then_oldest_and_no_expiry_last() {
        let mut cards = vec![
            card(1, 1000, None, t(1)),
            card(2, 1000, Some(t(20)), t(3)),
            card(3, 1000, Some(t(10)), t(5)),
            card(4, 1000, None, t(0)),
        ];
        order_cards(&mut cards, t(6));
        let ids: Vec<u128> = cards.iter().map(|c| c.id.0.as_u128()).collect();
        assert_eq!(ids, vec![3, 2, 4, 1]);
    }

    #[test]
    fn charge_rolls_over_to_the_next_card_in_the_same_second() {
        let mut cards = vec![card(1, 400, Some(t(10)), t(1)), card(2, 5000, None, t(1))];
        order_cards(&mut cards, t(2));
        let taken = draw(&mut cards, Millis(1500), false);
        assert_eq!(taken, vec![(cards[0].id, Millis(400)), (cards[1].id, Millis(1100))]);
        assert!(cards[0].used_up);
        assert_eq!(cards[1].balance, Millis(3900));
    }

    #[test]
    fn expired_cards_are_never_drawn() {
        let mut cards = vec![card(1, 9000, Some(t(2)), t(1)), card(2, 100, None, t(1))];
        order_cards(&mut cards, t(3));
        assert!(cards.iter().find(|c| c.id.0.as_u128() == 1).unwrap().expired);
        let taken = draw(&mut cards, Millis(1000), false);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].1, Millis(100));
        assert_eq!(spendable(&cards), Funds::default());
    }

    #[test]
    fn earned_cards_pay_first_for_ad_supported_sessions_and_never_for_others() {
        let mut cards = vec![card(1, 5000, Some(t(10)), t(1)), card(2, 1500, Some(t(20)), t(1)).earned(true)];
        order_cards(&mut cards, t(2));
        let taken = draw(&mut cards, Millis(1000), false);
        assert_eq!(taken, vec![(CardId(Uuid::from_u128(1)), Millis(1000))]);
        let taken = draw(&mut cards, Millis(2000), true);
        assert_eq!(taken, vec![(CardId(Uuid::from_u128(2)), Millis(1500)), (CardId(Uuid::from_u128(1)), Millis(500))]);
        assert_eq!(spendable(&cards), Funds { paid: Millis(3500), earned: Millis(0) });
    }

    #[test]
    fn never_below_zero() {
        let mut cards = vec![card(1, 300, None, t(1))];
        let taken = draw(&mut cards, Millis(1000), false);
        assert_eq!(taken, vec![(cards[0].id, Millis(300))]);
        assert_eq!(cards[0].balance, Millis(0));
    }
}
