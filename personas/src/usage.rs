//! What the access rules need to read from PostgreSQL: a user's
//! subscriptions and the minutes they spent with a persona today. Queries are
//! `sqlx` macros checked against the schema at compile time (offline data in
//! `.sqlx/`), reading rows into `mindbot_schema::records` types.
//!
//! "Today" is a calendar day in the deployment's time zone, not in UTC: a
//! daily limit resets at local midnight, where users expect it to.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use mindbot_schema::records::{Subscription, SubscriptionStatus};
use mindbot_schema::UserId;
use sqlx::PgPool;

use crate::error::PersonaError;
use crate::level::{AccessLevel, PlanLevels};

/// Every subscription row of `user`, granting or not.
pub async fn subscriptions_of(pool: &PgPool, user: UserId) -> Result<Vec<Subscription>, PersonaError> {
    Ok(sqlx::query_as!(
        Subscription,
        r#"SELECT id, user_id AS "user_id: UserId", plan_id, status AS "status: SubscriptionStatus",
               current_period_start, current_period_end,
               COALESCE(cancel_at_period_end, FALSE) AS "cancel_at_period_end!", stripe_subscription_id,
               COALESCE(created_at, NOW()) AS "created_at!"
           FROM user_subscriptions WHERE user_id = $1"#,
        user.0
    )
    .fetch_all(pool)
    .await?)
}

/// The access level `user`'s subscriptions grant at `now`.
pub async fn user_level(
    pool: &PgPool,
    plans: &PlanLevels,
    user: UserId,
    now: DateTime<Utc>,
) -> Result<AccessLevel, PersonaError> {
    Ok(plans.user_level(&subscriptions_of(pool, user).await?, now))
}

/// Minutes `user` spent with persona `slug` on the local day (in `tz`) that
/// contains `now`: the sum of `persona_sessions.duration_minutes` of rows
/// created that day. A session still running has no duration yet and counts
/// as zero until its row is completed.
pub async fn minutes_used_today(
    pool: &PgPool,
    user: UserId,
    slug: &str,
    tz: Tz,
    now: DateTime<Utc>,
) -> Result<i64, PersonaError> {
    let (start, end) = local_day(tz, now);
    let used = sqlx::query_scalar!(
        r#"SELECT COALESCE(SUM(GREATEST(duration_minutes, 0)), 0)::BIGINT AS "used!" FROM persona_sessions
           WHERE user_id = $1 AND persona_slug = $2 AND created_at >= $3 AND created_at < $4"#,
        user.0,
        slug,
        start,
        end
    )
    .fetch_one(pool)
    .await?;
    Ok(used)
}

/// The UTC instants where the local day containing `now` starts (inclusive)
/// and the next one starts (exclusive); 23 or 25 hours apart across a
/// daylight-saving change.
pub fn local_day(tz: Tz, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let today = now.with_timezone(&tz).date_naive();
    let tomorrow = today.succ_opt().expect("dates this far in the future are not in use");
    (start_of_day(tz, today), start_of_day(tz, tomorrow))
}

/// The first instant of `date` in `tz`. Where clocks jump forward at
/// midnight (e.g. `America/Santiago`), midnight does not exist and the day
/// starts at the first local time that does.
fn start_of_day(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.and_hms_opt(0, 0, 0).expect("midnight is a valid time");
    (0..=4 * 24)
        .find_map(|quarter| tz.from_local_datetime(&(midnight + Duration::minutes(15 * quarter))).earliest())
        .expect("every day has a first instant")
        .with_timezone(&Utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn a_local_day_is_bounded_by_local_midnights() {
        // 23:30 in New York on 10 March 2025 (EDT, UTC-4) is 03:30 UTC on the 11th.
        let (start, end) = local_day(chrono_tz::America::New_York, utc("2025-03-11T03:30:00Z"));
        assert_eq!(start, utc("2025-03-10T04:00:00Z"));
        assert_eq!(end, utc("2025-03-11T04:00:00Z"));
    }

    #[test]
    fn a_day_with_a_dst_change_is_23_hours_long() {
        // New York springs forward on 9 March 2025.
        let (start, end) = local_day(chrono_tz::America::New_York, utc("2025-03-09T12:00:00Z"));
        assert_eq!(start, utc("2025-03-09T05:00:00Z"));
        assert_eq!(end - start, Duration::hours(23));
    }

    #[test]
    fn a_missing_midnight_starts_the_day_at_the_first_real_instant() {
        // Santiago jumped from 00:00 to 01:00 on 8 September 2024 (UTC-4 to UTC-3).
        let (start, _) = local_day(chrono_tz::America::Santiago, utc("2024-09-08T15:00:00Z"));
        assert_eq!(start, utc("2024-09-08T04:00:00Z"));
    }

    #[test]
    fn utc_days_are_utc_midnights() {
        let (start, end) = local_day(chrono_tz::UTC, utc("2025-06-01T00:00:00Z"));
        assert_eq!((start, end), (utc("2025-06-01T00:00:00Z"), utc("2025-06-02T00:00:00Z")));
    }
}
