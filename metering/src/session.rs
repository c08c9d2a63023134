//! A metered session as the rest of the system names it: what a caller opens
//! one with ([`OpenSession`], [`OpenRules`]) and why it ended
//! ([`EndReason`]). Domain types only: the meter and the store take them,
//! the worker, the API and the benchmarks build them; nothing here touches
//! the database.

use crate::ids::UserId;
use crate::money::Rate;
use crate::records::SessionStatus;

/// Why a session ended. Maps onto the seed's `status` and our `end_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    UserLeft,
    BalanceExhausted,
    TimeLimit,
    DailyLimit,
    Shutdown,
    RoomClosed,
    AgentRemoved,
    DbUnavailable,
    Orphaned,
    Error,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::UserLeft => "user_left",
            EndReason::BalanceExhausted => "balance_exhausted",
            EndReason::TimeLimit => "time_limit",
            EndReason::DailyLimit => "daily_limit",
            EndReason::Shutdown => "shutdown",
            EndReason::RoomClosed => "room_closed",
            EndReason::AgentRemoved => "agent_removed",
            EndReason::DbUnavailable => "db_unavailable",
            EndReason::Orphaned => "orphaned",
            EndReason::Error => "error",
        }
    }

    /// The seed status a session ending this way gets: an ending the product
    /// meant is `completed`; a failure of ours is `error`.
    pub fn status(self) -> SessionStatus {
        match self {
            EndReason::DbUnavailable | EndReason::Orphaned | EndReason::Error => SessionStatus::Error,
            _ => SessionStatus::Completed,
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a caller opens a metered session with.
#[derive(Debug, Clone)]
pub struct OpenSession {
    pub user: UserId,
    /// The seed's textual `session_id` (e.g. the LiveKit job id).
    pub session_key: String,
    pub room: String,
    pub persona_slug: String,
    pub rate: Rate,
    pub agent_type: String,
    pub worker_id: String,
    /// The persona is ad-supported: earned (rewarded-ad) cards pay first.
    pub ad_supported: bool,
}

/// Rules an open must keep beyond one active session per job and per (room, user).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenRules {
    /// The persona has a daily limit: one active session of it per user, so
    /// parallel sessions cannot each spend the whole of today's allowance.
    pub one_per_persona: bool,
}
