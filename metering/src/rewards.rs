//! Rewarded ad views: a completed view the ad server vouches for (its signed
//! callback, verified by the caller) earns the user talk time as an earned
//! time card, within a daily cap. This module is the one place earned cards
//! are written; the meter draws them like any card (see [`crate::ledger`]),
//! so the ledger and the audit cover them.
//!
//! One reward per ad view: the view id is unique among confirmed
//! interactions, so a replayed callback records nothing and earns nothing.
//! The cap is judged under the user's lock, on the local day of the
//! deployment's time zone by the database's clock.

use chrono::Duration;
use sqlx::PgPool;
use uuid::Uuid;

use crate::cards::generate_code;
use crate::error::{Error, Result};
use crate::ids::{CardId, UserId};

/// The deployment's reward rules (`[ads]` in `config.toml`).
#[derive(Debug, Clone)]
pub struct RewardPolicy {
    /// Talk time one rewarded view earns; whole minutes (cards hold minutes).
    pub reward_seconds: i32,
    /// Most earned seconds per user and local day.
    pub daily_cap_seconds: i32,
    /// How long an earned card stays valid (`None`: no expiry).
    pub validity: Option<Duration>,
    /// IANA time zone of the day the cap counts (`personas.timezone`).
    pub timezone: String,
    /// Ad types whose completed views earn time.
    pub rewarded_types: Vec<String>,
}

/// An ad view as the ad server's signed callback confirms it.
#[derive(Debug, Clone)]
pub struct ConfirmedView {
    pub user: UserId,
    /// The ad network's id of this one view (unique per view).
    pub ad_view_id: String,
    pub ad_id: String,
    pub ad_type: String,
    /// The persona the view was shown with, when known.
    pub persona: Option<String>,
    /// Seconds the ad played.
    pub view_duration: i32,
    pub completed: bool,
    /// What the view earned us, exact decimal text as the callback gave it.
    pub revenue: String,
}

/// Why a confirmed view earned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoReward {
    /// The view was not watched to the end.
    NotCompleted,
    /// Its ad type is not in `rewarded_types`.
    NotRewardedType,
    /// Today's rewards already reach the daily cap.
    DailyCapReached,
}

impl NoReward {
    pub fn as_str(self) -> &'static str {
        match self {
            NoReward::NotCompleted => "not_completed",
            NoReward::NotRewardedType => "not_rewarded_type",
            NoReward::DailyCapReached => "daily_cap_reached",
        }
    }
}

/// What a confirmed view did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewardOutcome {
    /// Recorded and rewarded: `seconds` on the earned card `card`.
    Rewarded { interaction: Uuid, card: CardId, seconds: i32, earned_today: i64 },
    /// Recorded; earned nothing.
    NotRewarded { interaction: Uuid, why: NoReward, earned_today: i64 },
    /// This view id was confirmed before: nothing recorded, nothing earned.
    AlreadyRecorded { interaction: Uuid },
}

/// Records a confirmed view and rewards it when it qualifies, in one
/// transaction under the user's lock (so parallel callbacks of one user
/// cannot both fit under the cap).
pub async fn confirm_view(pool: &PgPool, view: &ConfirmedView, policy: &RewardPolicy) -> Result<RewardOutcome> {
    let mut tx = pool.begin().await?;
    match crate::users::lock_user(&mut tx, view.user).await? {
        None => return Err(Error::UserNotFound { user: view.user }),
        Some(false) => return Err(Error::UserInactive { user: view.user }),
        Some(true) => {}
    }
    // The revenue is exact decimal text, cast by PostgreSQL (`$6::text::numeric`,
    // as the runtime query bound text before).
    let inserted: Option<Uuid> = sqlx::query_scalar!(
        "INSERT INTO ad_interactions (user_id, ad_id, ad_type, view_duration, completed, revenue, source, \
             ad_view_id, persona_slug, reward_day) \
         VALUES ($1, $2, $3, $4, $5, $6::text::numeric, 'callback', $7, $8, (NOW() AT TIME ZONE $9::text)::date) \
         ON CONFLICT (ad_view_id) WHERE source = 'callback' DO NOTHING RETURNING id",
        view.user.0,
        view.ad_id,
        view.ad_type,
        view.view_duration,
        view.completed,
        view.revenue,
        view.ad_view_id,
        view.persona,
        policy.timezone,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(interaction) = inserted else {
        let interaction: Uuid = sqlx::query_scalar!(
            "SELECT id FROM ad_interactions WHERE source = 'callback' AND ad_view_id = $1",
            view.ad_view_id
        )
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(RewardOutcome::AlreadyRecorded { interaction });
    };
    let earned_today: i64 = sqlx::query_scalar!(
        "SELECT COALESCE(SUM(rewarded_seconds), 0)::int8 AS \"earned!\" FROM ad_interactions \
         WHERE user_id = $1 AND rewarded_seconds > 0 AND reward_day = (NOW() AT TIME ZONE $2::text)::date",
        view.user.0,
        policy.timezone,
    )
    .fetch_one(&mut *tx)
    .await?;
    let why = if !view.completed {
        Some(NoReward::NotCompleted)
    } else if !policy.rewarded_types.contains(&view.ad_type) {
        Some(NoReward::NotRewardedType)
    } else if earned_today + i64::from(policy.reward_seconds) > i64::from(policy.daily_cap_seconds) {
        Some(NoReward::DailyCapReached)
    } else {
        None
    };
    if let Some(why) = why {
        tx.commit().await?;
        return Ok(RewardOutcome::NotRewarded { interaction, why, earned_today });
    }
    let minutes = policy.reward_seconds / 60;
    let card: CardId = sqlx::query_scalar!(
        "INSERT INTO time_cards (user_id, activation_code, total_minutes, remaining_minutes, status, kind, \
             activated_at, expires_at) \
         VALUES ($1, $2, $3, $3, 'active', 'earned', NOW(), NOW() + $4 * INTERVAL '1 millisecond') \
         RETURNING id AS \"id: CardId\"",
        view.user.0,
        generate_code(),
        minutes,
        policy.validity.map(|v| v.num_milliseconds() as f64),
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query!(
        "UPDATE ad_interactions SET rewarded_seconds = $2, reward_cap_seconds = $3, time_card_id = $4 WHERE id = $1",
        interaction,
        minutes * 60,
        policy.daily_cap_seconds,
        card.0,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(RewardOutcome::Rewarded {
        interaction,
        card,
        seconds: minutes * 60,
        earned_today: earned_today + i64::from(minutes * 60),
    })
}

/// One persona's line of the operator's ad report.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AdReportLine {
    /// The persona (`-` when the view named none).
    pub persona: String,
    /// Views reported by clients (unsigned; they earn nothing).
    pub reported: i64,
    /// Views confirmed by the ad server's signed callback.
    pub views: i64,
    /// Confirmed views watched to the end.
    pub completions: i64,
    /// Seconds earned by views shown with this persona.
    pub earned_seconds: i64,
    /// Earned time spent in sessions with this persona, in whole seconds
    /// (rounded down) of card time.
    pub spent_seconds: i64,
    /// Revenue of the confirmed views, exact decimal text.
    pub revenue: String,
}

/// Per persona, since `since` (by interaction creation, and by charge time
/// for spending): views, completions, earned and spent seconds, revenue.
pub async fn report(pool: &PgPool, since: chrono::DateTime<chrono::Utc>) -> Result<Vec<AdReportLine>> {
    Ok(sqlx::query_as!(
        AdReportLine,
        "WITH views AS ( \
             SELECT COALESCE(persona_slug, '-') AS persona, \
                    COUNT(*) FILTER (WHERE source = 'client') AS reported, \
                    COUNT(*) FILTER (WHERE source = 'callback') AS views, \
                    COUNT(*) FILTER (WHERE source = 'callback' AND completed) AS completions, \
                    COALESCE(SUM(rewarded_seconds), 0)::int8 AS earned_seconds, \
                    COALESCE(SUM(revenue) FILTER (WHERE source = 'callback'), 0) AS revenue \
             FROM ad_interactions WHERE created_at >= $1 GROUP BY 1), \
         spent AS ( \
             SELECT COALESCE(v.persona_slug, '-') AS persona, (SUM(l.charged_ms) / 1000)::int8 AS spent_seconds \
             FROM card_charges l JOIN time_cards c ON c.id = l.time_card_id AND c.kind = 'earned' \
             JOIN voice_sessions v ON v.id = l.voice_session_id \
             WHERE l.last_charged_at >= $1 GROUP BY 1) \
         SELECT COALESCE(a.persona, s.persona) AS \"persona!\", COALESCE(a.reported, 0) AS \"reported!\", \
                COALESCE(a.views, 0) AS \"views!\", COALESCE(a.completions, 0) AS \"completions!\", \
                COALESCE(a.earned_seconds, 0) AS \"earned_seconds!\", \
                COALESCE(s.spent_seconds, 0) AS \"spent_seconds!\", COALESCE(a.revenue, 0)::text AS \"revenue!\" \
         FROM views a FULL JOIN spent s ON s.persona = a.persona ORDER BY 1",
        since,
    )
    .fetch_all(pool)
    .await?)
}
