//! Exact money: card time in integer milliseconds, and cost multipliers as
//! exact per-second rates.
//!
//! Nothing here is floating point. A multiplier such as `1.25` is parsed into
//! a [`Rate`] of 1250 ms of card time per metered second; one metered second
//! costs exactly `rate` milliseconds, so a session of `n` seconds costs
//! exactly `n * rate` and no rounding happens while charging. Rounding only
//! happens where the seed schema wants whole minutes, and each such place
//! says which way it rounds.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds in one minute of card time.
pub const MS_PER_MINUTE: i64 = 60_000;

/// An amount of card time in milliseconds. Never negative when it is a
/// balance; arithmetic is checked so an overflow is an error, not a wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Millis(pub i64);

impl Millis {
    pub const ZERO: Millis = Millis(0);

    /// Whole minutes.
    pub fn from_minutes(minutes: i64) -> Millis {
        Millis(minutes * MS_PER_MINUTE)
    }

    /// A balance stored as the seed's whole minutes plus the sub-minute part.
    pub fn from_parts(remaining_minutes: i32, remaining_sub_ms: i32) -> Millis {
        Millis(i64::from(remaining_minutes) * MS_PER_MINUTE + i64::from(remaining_sub_ms))
    }

    /// Split into (whole minutes, sub-minute milliseconds): the seed's
    /// `remaining_minutes` is the floor, so it always equals the whole
    /// minutes of the exact balance.
    pub fn to_parts(self) -> (i64, i64) {
        (self.0.div_euclid(MS_PER_MINUTE), self.0.rem_euclid(MS_PER_MINUTE))
    }

    /// Whole minutes, rounded down (a balance: never show more than there is).
    pub fn whole_minutes_floor(self) -> i64 {
        self.0.div_euclid(MS_PER_MINUTE)
    }

    /// Whole minutes, rounded up (a cost: any part of a minute shows as one).
    pub fn whole_minutes_ceil(self) -> i64 {
        -((-self.0).div_euclid(MS_PER_MINUTE))
    }

    pub fn checked_add(self, other: Millis) -> Option<Millis> {
        self.0.checked_add(other.0).map(Millis)
    }

    pub fn checked_sub(self, other: Millis) -> Option<Millis> {
        self.0.checked_sub(other.0).map(Millis)
    }

    pub fn min(self, other: Millis) -> Millis {
        Millis(self.0.min(other.0))
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Sign and magnitude apart: -1 ms is "-0.001s" (Euclid's division
        // would print it as -1 s plus 999 ms, "-1.999s").
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:03}s", abs / 1000, abs % 1000)
    }
}

/// A cost multiplier, held as the exact charge for one metered second in
/// milliseconds of card time (`1.0` is 1000, `0.5` is 500, `2.75` is 2750).
/// At most three decimals; zero and negative multipliers do not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(i64);

/// Why a multiplier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("cost multiplier {0} is not positive")]
    NotPositive(String),
    #[error("cost multiplier {0} has more than three decimals")]
    TooPrecise(String),
    #[error("cost multiplier {0} is not a decimal number")]
    NotADecimal(String),
    #[error("cost multiplier {0} is too large (at most 1000)")]
    TooLarge(String),
}

impl Rate {
    /// The rate of multiplier 1.0.
    pub const ONE: Rate = Rate(1000);
    const MAX_MS_PER_SECOND: i64 = 1_000_000;

    /// From milliseconds charged per metered second (the multiplier times 1000).
    pub fn from_ms_per_second(ms: i64) -> Result<Rate, RateError> {
        let shown = format_thousandths(ms);
        if ms <= 0 {
            return Err(RateError::NotPositive(shown));
        }
        if ms > Self::MAX_MS_PER_SECOND {
            return Err(RateError::TooLarge(shown));
        }
        Ok(Rate(ms))
    }

    /// From a JSON or TOML number. Exact for any decimal with at most three
    /// places (the nearest double to `1.1` is within 1e-9 of 1.1); anything
    /// further from a thousandth than that is refused as too precise.
    pub fn from_f64(value: f64) -> Result<Rate, RateError> {
        let shown = value.to_string();
        if !value.is_finite() {
            return Err(RateError::NotADecimal(shown));
        }
        if value <= 0.0 {
            return Err(RateError::NotPositive(shown));
        }
        let scaled = value * 1000.0;
        let rounded = scaled.round();
        if (scaled - rounded).abs() > 1e-6 {
            return Err(RateError::TooPrecise(shown));
        }
        if rounded > Self::MAX_MS_PER_SECOND as f64 {
            return Err(RateError::TooLarge(shown));
        }
        Rate::from_ms_per_second(rounded as i64).map_err(|_| RateError::NotPositive(shown))
    }

    /// Milliseconds of card time one metered second costs.
    pub fn ms_per_second(self) -> i64 {
        self.0
    }

    /// What `seconds` metered seconds cost.
    pub fn cost_of(self, seconds: i64) -> Option<Millis> {
        self.0.checked_mul(seconds).map(Millis)
    }

    /// Whole seconds a balance pays for (rounded down).
    pub fn whole_seconds_in(self, balance: Millis) -> i64 {
        balance.0.max(0) / self.0
    }

    /// Wall-clock milliseconds a balance pays for (rounded down: the meter
    /// never gives time that was not paid for).
    pub fn wall_ms_in(self, balance: Millis) -> i64 {
        (i128::from(balance.0.max(0)) * 1000 / i128::from(self.0)) as i64
    }

    /// The multiplier as a number, for JSON and display only.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// The multiplier as exact decimal text (`1.25`), e.g. for a NUMERIC column.
    pub fn decimal_text(self) -> String {
        format_thousandths(self.0)
    }
}

fn format_thousandths(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let a = ms.unsigned_abs();
    let (int, frac) = (a / 1000, a % 1000);
    if frac == 0 {
        return format!("{sign}{int}.0");
    }
    let frac = format!("{frac:03}");
    format!("{sign}{int}.{}", frac.trim_end_matches('0'))
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.decimal_text())
    }
}

impl FromStr for Rate {
    type Err = RateError;

    /// Parses decimal text (`"1.25"`) exactly, without going through floats.
    fn from_str(s: &str) -> Result<Rate, RateError> {
        let t = s.trim();
        let bad = || RateError::NotADecimal(s.to_string());
        let (neg, digits) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty() && frac.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let frac = frac.trim_end_matches('0');
        if frac.len() > 3 {
            return Err(RateError::TooPrecise(s.to_string()));
        }
        let int: i64 = if int.is_empty() { 0 } else { int.parse().map_err(|_| RateError::TooLarge(s.to_string()))? };
        let frac_ms: i64 = format!("{frac:0<3}").parse().map_err(|_| bad())?;
        let ms = int
            .checked_mul(1000)
            .and_then(|v| v.checked_add(frac_ms))
            .ok_or_else(|| RateError::TooLarge(s.to_string()))?;
        if neg && ms != 0 {
            return Err(RateError::NotPositive(s.to_string()));
        }
        Rate::from_ms_per_second(ms).map_err(|e| match e {
            RateError::NotPositive(_) => RateError::NotPositive(s.to_string()),
            RateError::TooLarge(_) => RateError::TooLarge(s.to_string()),
            other => other,
        })
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_f64())
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Num {
            F(f64),
            S(String),
        }
        match Num::deserialize(d)? {
            Num::F(v) => Rate::from_f64(v),
            Num::S(s) => s.parse(),
        }
        .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn millis_read_as_seconds_with_their_sign() {
        for (ms, text) in [(0, "0.000s"), (1, "0.001s"), (61_250, "61.250s"), (-1, "-0.001s"), (-1_500, "-1.500s")] {
            assert_eq!(Millis(ms).to_string(), text, "{ms} ms");
        }
        assert_eq!(Millis(i64::MIN).to_string(), "-9223372036854775.808s");
    }

    #[test]
    fn parses_common_multipliers_exactly() {
        for (text, ms) in
            [("1.0", 1000), ("0.5", 500), ("1.25", 1250), ("2.75", 2750), ("1.1", 1100), ("3", 3000), (".75", 750)]
        {
            assert_eq!(text.parse::<Rate>().unwrap().ms_per_second(), ms, "{text}");
            let f: f64 = text.parse().unwrap();
            assert_eq!(Rate::from_f64(f).unwrap().ms_per_second(), ms, "{text} as f64");
        }
    }

    #[test]
    fn refuses_bad_multipliers_naming_the_value() {
        assert_eq!("0".parse::<Rate>(), Err(RateError::NotPositive("0".into())));
        assert_eq!("-1.5".parse::<Rate>(), Err(RateError::NotPositive("-1.5".into())));
        assert_eq!("1.2345".parse::<Rate>(), Err(RateError::TooPrecise("1.2345".into())));
        assert_eq!("abc".parse::<Rate>(), Err(RateError::NotADecimal("abc".into())));
        assert!(Rate::from_f64(0.0005).is_err());
        assert!(Rate::from_f64(f64::NAN).is_err());
        assert!(Rate::from_f64(-2.0).is_err());
        assert!(Rate::from_f64(1.0001).unwrap_err().to_string().contains("1.0001"));
    }

    #[test]
    fn minutes_round_as_documented() {
        assert_eq!(Millis(119_999).whole_minutes_floor(), 1);
        assert_eq!(Millis(60_001).whole_minutes_ceil(), 2);
        assert_eq!(Millis(60_000).whole_minutes_ceil(), 1);
        assert_eq!(Millis(0).whole_minutes_ceil(), 0);
        assert_eq!(Millis::from_parts(3, 59_999).to_parts(), (3, 59_999));
    }

    #[test]
    fn remainder_time_rounds_down() {
        let r: Rate = "1.5".parse().unwrap();
        assert_eq!(r.wall_ms_in(Millis(1000)), 666);
        assert_eq!(r.whole_seconds_in(Millis(90_000)), 60);
    }

    proptest! {
        #[test]
        fn decimal_text_round_trips(ms in 1i64..1_000_000) {
            let r = Rate::from_ms_per_second(ms).unwrap();
            prop_assert_eq!(r.decimal_text().parse::<Rate>().unwrap(), r);
            prop_assert_eq!(Rate::from_f64(r.as_f64()).unwrap(), r);
        }

        #[test]
        fn session_cost_is_duration_times_rate(ms in 1i64..1_000_000, secs in 0i64..1_000_000) {
            let r = Rate::from_ms_per_second(ms).unwrap();
            // Charging second by second adds up to exactly duration x multiplier.
            let total = (0..secs.min(2000)).fold(Millis::ZERO, |acc, _| acc.checked_add(r.cost_of(1).unwrap()).unwrap());
            prop_assert_eq!(total, r.cost_of(secs.min(2000)).unwrap());
            prop_assert_eq!(r.cost_of(secs).unwrap().0, ms * secs);
        }

        #[test]
        fn parts_round_trip_and_minutes_are_whole_minutes(b in 0i64..10_000_000_000) {
            let (m, s) = Millis(b).to_parts();
            prop_assert!((0..MS_PER_MINUTE).contains(&s));
            prop_assert_eq!(Millis::from_parts(m as i32, s as i32), Millis(b));
            prop_assert_eq!(m, b / MS_PER_MINUTE);
        }

        #[test]
        fn remainder_never_exceeds_what_was_paid(ms in 1i64..1_000_000, b in 0i64..10_000_000) {
            let r = Rate::from_ms_per_second(ms).unwrap();
            let wall = r.wall_ms_in(Millis(b));
            // The wall time granted costs no more than the balance.
            prop_assert!(i128::from(wall) * i128::from(ms) <= i128::from(b) * 1000);
        }
    }
}
