//! The caller's own records: `GET /v1/me/balance` (exact balance, per card,
//! seconds affordable per persona), `GET /v1/me/cards` and `GET
//! /v1/me/sessions` (paged history, with each session's provider usage). Read-only; amounts are exact
//! milliseconds of card time.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use metering::balance::drawable;
use metering::records::TimeCard;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::AuthUser;
use super::error::{ApiError, ApiQuery, ErrorBody};
use super::personas::pickable;
use super::responses::NeedsUser;
use super::Api;

/// One card as its owner sees it (the activation code is not repeated).
#[derive(Debug, Serialize, ToSchema)]
pub struct CardView {
    pub id: Uuid,
    /// `pending`, `active`, `expired`, `used` or `refunded`.
    pub status: String,
    /// `paid`, or `earned` (rewarded-ad time: pays only on ad-supported personas).
    pub kind: String,
    pub total_minutes: i32,
    /// Exact remaining card time in milliseconds.
    pub balance_ms: i64,
    /// Whether the card can pay now (active, unexpired, not empty).
    pub spendable: bool,
    pub activated_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl CardView {
    pub fn of(c: &TimeCard, now: DateTime<Utc>) -> CardView {
        CardView {
            id: c.id.0,
            status: c.status.as_str().to_string(),
            kind: if c.earned { "earned" } else { "paid" }.to_string(),
            total_minutes: c.total_minutes,
            balance_ms: c.balance().0,
            spendable: drawable(c, now),
            activated_at: c.activated_at,
            expires_at: c.expires_at,
            created_at: c.created_at,
        }
    }
}

/// What a balance buys with one persona.
#[derive(Debug, Serialize, ToSchema)]
pub struct Affordable {
    pub persona: String,
    pub multiplier: String,
    /// Whole seconds affordable: paid time, plus earned time when the
    /// persona is ad-supported.
    pub seconds: i64,
    /// Whether earned (rewarded-ad) time pays with this persona.
    pub ad_supported: bool,
    /// Of `seconds`, those earned time pays for (spent first); 0 when the
    /// persona is not ad-supported.
    pub earned_seconds: i64,
    /// Of `seconds`, those paid cards pay for.
    pub paid_seconds: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceView {
    /// The exact spendable balance, milliseconds of card time.
    pub balance_ms: i64,
    /// Its whole minutes (the seed's `remaining_minutes` sum).
    pub balance_minutes: i64,
    /// Of `balance_ms`, paid cards' time: spendable on every persona.
    pub paid_ms: i64,
    /// Of `balance_ms`, earned (rewarded-ad) time: spendable only on
    /// ad-supported personas, where it is spent first.
    pub earned_ms: i64,
    pub cards: Vec<CardView>,
    /// Seconds affordable per persona, cheapest first.
    pub personas: Vec<Affordable>,
}

#[utoipa::path(get, path = "/v1/me/balance", tag = "me", security(("bearer" = [])),
    responses(
        (status = 200, description = "Exact balance, cards, seconds per persona", body = BalanceView),
        NeedsUser,
    ))]
pub async fn balance(State(api): State<Arc<Api>>, auth: AuthUser) -> Result<Json<BalanceView>, ApiError> {
    let b = metering::balance::balance(&api.pool, auth.user).await?;
    let now = b.at;
    let mut personas: Vec<Affordable> = pickable(&api)
        .await?
        .into_iter()
        .map(|(p, _)| {
            let rate = p.base_cost_multiplier;
            let seconds = b.seconds_for(rate, p.ad_supported);
            let earned_seconds = if p.ad_supported { rate.whole_seconds_in(b.funds.earned) } else { 0 };
            Affordable {
                persona: p.slug,
                multiplier: rate.decimal_text(),
                seconds,
                ad_supported: p.ad_supported,
                earned_seconds,
                paid_seconds: seconds - earned_seconds,
            }
        })
        .collect();
    personas.sort_by(|a, b| b.seconds.cmp(&a.seconds).then_with(|| a.persona.cmp(&b.persona)));
    Ok(Json(BalanceView {
        balance_ms: b.spendable.0,
        balance_minutes: b.spendable.whole_minutes_floor(),
        paid_ms: b.funds.paid.0,
        earned_ms: b.funds.earned.0,
        cards: b.cards.iter().map(|c| CardView::of(c, now)).collect(),
        personas,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CardList {
    pub cards: Vec<CardView>,
}

#[utoipa::path(get, path = "/v1/me/cards", tag = "me", security(("bearer" = [])),
    responses(
        (status = 200, description = "Every card of the caller, spendable ones first in paying order", body = CardList),
        NeedsUser,
    ))]
pub async fn cards(State(api): State<Arc<Api>>, auth: AuthUser) -> Result<Json<CardList>, ApiError> {
    let b = metering::balance::balance(&api.pool, auth.user).await?;
    let now = b.at;
    Ok(Json(CardList { cards: b.cards.iter().map(|c| CardView::of(c, now)).collect() }))
}

/// Paging for the session history.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Sessions per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// Sessions to skip, 0 to 100000 (default 0).
    #[param(minimum = 0, maximum = 100000)]
    pub offset: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub id: Uuid,
    pub room: String,
    pub persona: Option<String>,
    /// `active`, `completed`, `error` or `cancelled`.
    pub status: String,
    /// Why it ended (`user_left`, `balance_exhausted`, ...), once ended.
    pub end_reason: Option<String>,
    pub start_time: DateTime<Utc>,
    pub end_time: Option<DateTime<Utc>>,
    /// Whole seconds of metered time.
    pub duration_seconds: i64,
    /// Exact charge in milliseconds of card time.
    pub cost_ms: i64,
    /// The charge rounded up to whole minutes (the seed's `cost_minutes`).
    pub cost_minutes: i64,
    /// The multiplier charged, exact decimal text.
    pub multiplier: String,
    pub quality_rating: Option<i32>,
    /// What the session used of the voice providers, per stage and provider
    /// (empty when the voice was off or said nothing).
    pub usage: Vec<UsageView>,
}

/// One stage's provider usage in a session (integer counters; a stage's
/// other counters are 0).
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageView {
    /// `stt`, `llm` or `tts`.
    pub stage: String,
    /// The provider's name in the operator's `[voice]` settings.
    pub provider: String,
    /// Milliseconds of the user's audio transcribed.
    pub stt_audio_ms: i64,
    /// Prompt tokens the language model reported.
    pub llm_prompt_tokens: i64,
    /// Completion tokens the language model reported.
    pub llm_completion_tokens: i64,
    /// Characters spoken by text to speech.
    pub tts_characters: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionPage {
    pub sessions: Vec<SessionView>,
    /// The `offset` of the next page, absent on the last one.
    pub next_offset: Option<i64>,
}

#[utoipa::path(get, path = "/v1/me/sessions", tag = "me", params(Page), security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's sessions, newest first", body = SessionPage),
        NeedsUser,
        (status = 422, description = "A paging parameter is invalid (named)", body = ErrorBody),
    ))]
pub async fn sessions(
    State(api): State<Arc<Api>>,
    auth: AuthUser,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Json<SessionPage>, ApiError> {
    let limit = page.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be from 1 to 100"));
    }
    let offset = page.offset.unwrap_or(0);
    if !(0..=100_000).contains(&offset) {
        return Err(ApiError::invalid("offset", "must be from 0 to 100000"));
    }
    let mut rows: Vec<SessionView> = sqlx::query!(
        r#"SELECT id, room_name AS room, persona_slug AS persona, COALESCE(status, 'active') AS "status!",
               end_reason, COALESCE(start_time, NOW()) AS "start_time!", end_time,
               (metered_ms / 1000)::int8 AS "duration_seconds!", charged_ms AS cost_ms,
               ((charged_ms + 59999) / 60000)::int8 AS "cost_minutes!",
               trim_scale(rate_ms_per_second::numeric / 1000)::text AS "multiplier!", quality_rating
           FROM voice_sessions WHERE user_id = $1 ORDER BY start_time DESC NULLS LAST, id DESC LIMIT $2 OFFSET $3"#,
        auth.user.0,
        limit + 1,
        offset
    )
    .fetch_all(&api.pool)
    .await?
    .into_iter()
    .map(|r| SessionView {
        id: r.id,
        room: r.room,
        persona: r.persona,
        status: r.status,
        end_reason: r.end_reason,
        start_time: r.start_time,
        end_time: r.end_time,
        duration_seconds: r.duration_seconds,
        cost_ms: r.cost_ms,
        cost_minutes: r.cost_minutes,
        multiplier: r.multiplier,
        quality_rating: r.quality_rating,
        usage: Vec::new(),
    })
    .collect();
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut usage = crate::usage::of_sessions(&api.pool, &ids).await?;
    for row in &mut rows {
        row.usage = usage
            .remove(&row.id)
            .unwrap_or_default()
            .into_iter()
            .map(|u| UsageView {
                stage: u.stage,
                provider: u.provider,
                stt_audio_ms: u.counters.stt_audio_ms,
                llm_prompt_tokens: u.counters.llm_prompt_tokens,
                llm_completion_tokens: u.counters.llm_completion_tokens,
                tts_characters: u.counters.tts_characters,
            })
            .collect();
    }
    Ok(Json(SessionPage { sessions: rows, next_offset: more.then_some(offset + limit) }))
}
