//! The invariants of DESIGN.md, checked over the whole database. Each check
//! is one query that returns the rows breaking it; an empty result passes.

use sqlx::PgPool;

use crate::error::Result;

/// One invariant and what the database said about it.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub description: &'static str,
    /// Rows examined.
    pub examined: i64,
    /// A few offending rows, described.
    pub violations: Vec<String>,
    /// How many rows break it in all.
    pub violation_count: i64,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.violation_count == 0
    }
}

/// The audit's outcome.
#[derive(Debug, Clone)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(Check::passed)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.checks {
            let verdict = if c.passed() { "ok  " } else { "FAIL" };
            writeln!(f, "{verdict} {:<28} {:>8} rows  {}", c.name, c.examined, c.description)?;
            for v in &c.violations {
                writeln!(f, "       {v}")?;
            }
            if c.violation_count > c.violations.len() as i64 {
                writeln!(f, "       ... {} more", c.violation_count - c.violations.len() as i64)?;
            }
        }
        write!(f, "{}", if self.passed() { "audit passed" } else { "audit FAILED" })
    }
}

struct Rule {
    name: &'static str,
    description: &'static str,
    examined: &'static str,
    /// Returns one text column describing each offending row.
    offenders: &'static str,
}

const RULES: &[Rule] = &[
    Rule {
        name: "ledger_matches_cards",
        description: "for every card, total - remaining = its ledger charges + its revoked time (ms)",
        examined: "SELECT COUNT(*) FROM time_cards c WHERE COALESCE(c.status, 'pending') <> 'refunded' \
                   OR EXISTS (SELECT 1 FROM card_revocations r WHERE r.time_card_id = c.id)",
        offenders: "SELECT 'card ' || c.id || ': total-remaining ' || \
                        (c.total_minutes::int8 * 60000 - (c.remaining_minutes::int8 * 60000 + c.remaining_sub_ms)) || \
                        ' ms, ledger ' || COALESCE(l.s, 0) || ' ms, revoked ' || COALESCE(r.revoked_ms, 0) || ' ms' \
                    FROM time_cards c LEFT JOIN (SELECT time_card_id, SUM(charged_ms) AS s FROM card_charges GROUP BY 1) l \
                      ON l.time_card_id = c.id LEFT JOIN card_revocations r ON r.time_card_id = c.id \
                    WHERE (COALESCE(c.status, 'pending') <> 'refunded' OR r.time_card_id IS NOT NULL) \
                      AND c.total_minutes::int8 * 60000 - (c.remaining_minutes::int8 * 60000 + c.remaining_sub_ms) \
                          <> COALESCE(l.s, 0) + COALESCE(r.revoked_ms, 0)",
    },
    Rule {
        name: "refunds_unused",
        description: "a refunded card has no balance; one refunded with no revocation recorded was never charged",
        examined: "SELECT COUNT(*) FROM time_cards WHERE status = 'refunded'",
        offenders: "SELECT 'card ' || c.id || ' refunded with balance or unrecorded charges' FROM time_cards c \
                    WHERE c.status = 'refunded' AND (c.remaining_minutes <> 0 OR c.remaining_sub_ms <> 0 \
                      OR (NOT EXISTS (SELECT 1 FROM card_revocations r WHERE r.time_card_id = c.id) \
                          AND EXISTS (SELECT 1 FROM card_charges l WHERE l.time_card_id = c.id AND l.charged_ms > 0)))",
    },
    Rule {
        name: "revoked_means_refunded",
        description: "a card with revoked time is refunded and no longer suspended",
        examined: "SELECT COUNT(*) FROM card_revocations",
        offenders: "SELECT 'card ' || c.id || ' has ' || r.revoked_ms || ' ms revoked but is ' || \
                        COALESCE(c.status, 'pending') || CASE WHEN c.suspended_at IS NULL THEN '' ELSE ', suspended' END \
                    FROM card_revocations r JOIN time_cards c ON c.id = r.time_card_id \
                    WHERE COALESCE(c.status, 'pending') <> 'refunded' OR c.suspended_at IS NOT NULL",
    },
    Rule {
        name: "suspended_cards_not_charged",
        description: "no charge to a card was written after its suspension",
        examined: "SELECT COUNT(*) FROM time_cards WHERE suspended_at IS NOT NULL",
        offenders: "SELECT 'card ' || c.id || ' suspended at ' || c.suspended_at || ' charged at ' || l.last_charged_at \
                    FROM time_cards c JOIN card_charges l ON l.time_card_id = c.id \
                    WHERE c.suspended_at IS NOT NULL AND l.last_charged_at > c.suspended_at",
    },
    Rule {
        name: "no_overdraft",
        description: "no card balance below zero or above its total",
        examined: "SELECT COUNT(*) FROM time_cards",
        offenders: "SELECT 'card ' || id || ' balance ' || (remaining_minutes::int8 * 60000 + remaining_sub_ms) || ' ms' \
                    FROM time_cards WHERE remaining_minutes < 0 \
                       OR remaining_minutes::int8 * 60000 + remaining_sub_ms > total_minutes::int8 * 60000",
    },
    Rule {
        name: "minutes_are_whole_minutes",
        description: "remaining_minutes is the whole minutes of the exact balance",
        examined: "SELECT COUNT(*) FROM time_cards",
        offenders: "SELECT 'card ' || id || ' sub-minute part ' || remaining_sub_ms FROM time_cards \
                    WHERE remaining_sub_ms < 0 OR remaining_sub_ms >= 60000",
    },
    Rule {
        name: "used_means_empty",
        description: "a card is 'used' exactly when an active-able card reached zero",
        examined: "SELECT COUNT(*) FROM time_cards WHERE status IN ('used', 'active')",
        offenders: "SELECT 'card ' || id || ' is ' || status || ' with ' || \
                        (remaining_minutes::int8 * 60000 + remaining_sub_ms) || ' ms' FROM time_cards \
                    WHERE (status = 'used' AND (remaining_minutes <> 0 OR remaining_sub_ms <> 0)) \
                       OR (status = 'active' AND remaining_minutes = 0 AND remaining_sub_ms = 0 \
                           AND EXISTS (SELECT 1 FROM card_charges l WHERE l.time_card_id = time_cards.id))",
    },
    Rule {
        name: "sessions_match_ledger",
        description: "a session's charged_ms = sum of its ledger charges",
        examined: "SELECT COUNT(*) FROM voice_sessions",
        offenders: "SELECT 'session ' || v.id || ': charged ' || v.charged_ms || ' ms, ledger ' || COALESCE(l.s, 0) \
                    FROM voice_sessions v LEFT JOIN (SELECT voice_session_id, SUM(charged_ms) AS s FROM card_charges \
                      GROUP BY 1) l ON l.voice_session_id = v.id WHERE v.charged_ms <> COALESCE(l.s, 0)",
    },
    Rule {
        name: "charge_within_rate",
        description: "no session charged more than its metered time at its rate (no second charged twice)",
        examined: "SELECT COUNT(*) FROM voice_sessions",
        offenders: "SELECT 'session ' || id || ': charged ' || charged_ms || ' ms for ' || metered_ms || ' ms at ' || \
                        rate_ms_per_second || ' ms/s' FROM voice_sessions \
                    WHERE charged_ms * 1000 > (metered_ms + 999) / 1000 * 1000 * rate_ms_per_second",
    },
    Rule {
        name: "closed_sessions_complete",
        description: "a closed session has end time, duration, cost (ceil of charged minutes) and reason",
        examined: "SELECT COUNT(*) FROM voice_sessions WHERE status IN ('completed', 'error') AND end_reason IS NOT NULL",
        offenders: "SELECT 'session ' || id || ' closed without end data' FROM voice_sessions \
                    WHERE status IN ('completed', 'error') AND end_reason IS NOT NULL AND (end_time IS NULL \
                      OR duration_seconds IS NULL OR cost_minutes IS DISTINCT FROM ((charged_ms + 59999) / 60000)::int4)",
    },
    Rule {
        name: "charges_only_to_owner",
        description: "a session only draws on its own user's cards",
        examined: "SELECT COUNT(*) FROM card_charges",
        offenders: "SELECT 'session ' || v.id || ' drew on card ' || c.id || ' of another user' FROM card_charges l \
                    JOIN voice_sessions v ON v.id = l.voice_session_id JOIN time_cards c ON c.id = l.time_card_id \
                    WHERE v.user_id <> c.user_id",
    },
    Rule {
        name: "one_charge_per_job",
        description: "no two charged sessions of one job (or one user in one room) overlap in time (nobody pays twice)",
        examined: "SELECT COUNT(*) FROM voice_sessions WHERE charged_ms > 0",
        // Two equality joins in a UNION (a pair matching both counts once):
        // joined on `a OR b`, PostgreSQL compared every pair of sessions
        // (23 s at 10,000 sessions); on equalities it hashes.
        offenders: "SELECT 'sessions ' || a.id || ' and ' || b.id || ' of job ' || a.session_id || ' in room ' || \
                        a.room_name || ' overlap' FROM voice_sessions a JOIN voice_sessions b \
                      ON a.id < b.id AND a.session_id = b.session_id \
                    WHERE a.charged_ms > 0 AND b.charged_ms > 0 \
                      AND a.start_time < COALESCE(b.end_time, 'infinity') \
                      AND b.start_time < COALESCE(a.end_time, 'infinity') \
                    UNION \
                    SELECT 'sessions ' || a.id || ' and ' || b.id || ' of job ' || a.session_id || ' in room ' || \
                        a.room_name || ' overlap' FROM voice_sessions a JOIN voice_sessions b \
                      ON a.id < b.id AND a.room_name = b.room_name AND a.user_id = b.user_id \
                    WHERE a.charged_ms > 0 AND b.charged_ms > 0 \
                      AND a.start_time < COALESCE(b.end_time, 'infinity') \
                      AND b.start_time < COALESCE(a.end_time, 'infinity')",
    },
    Rule {
        name: "earned_only_ad_supported",
        description: "earned (rewarded-ad) card time only paid for sessions with ad-supported personas",
        examined: "SELECT COUNT(*) FROM card_charges l JOIN time_cards c ON c.id = l.time_card_id WHERE c.kind = 'earned'",
        offenders: "SELECT 'session ' || v.id || ' (persona ' || COALESCE(v.persona_slug, '?') || \
                        ', not ad-supported) drew ' || l.charged_ms || ' ms from earned card ' || c.id \
                    FROM card_charges l JOIN time_cards c ON c.id = l.time_card_id \
                    JOIN voice_sessions v ON v.id = l.voice_session_id \
                    WHERE c.kind = 'earned' AND l.charged_ms > 0 AND NOT v.ad_supported",
    },
    Rule {
        name: "rewards_within_daily_cap",
        description: "no user earned more on one local day than the daily reward cap",
        examined: "SELECT COUNT(*) FROM ad_interactions WHERE rewarded_seconds > 0",
        offenders: "SELECT 'user ' || user_id || ' earned ' || SUM(rewarded_seconds) || ' s on ' || \
                        COALESCE(reward_day::text, '?') || ', cap ' || COALESCE(MAX(reward_cap_seconds)::text, 'none') \
                    FROM ad_interactions WHERE rewarded_seconds > 0 GROUP BY user_id, reward_day \
                    HAVING reward_day IS NULL OR MAX(reward_cap_seconds) IS NULL \
                        OR SUM(rewarded_seconds) > MAX(reward_cap_seconds)",
    },
    Rule {
        name: "one_reward_per_ad_view",
        description: "every earned card comes from exactly one signed ad view, rewarded once, for its whole time",
        examined: "SELECT COUNT(*) FROM time_cards WHERE kind = 'earned'",
        offenders: "SELECT 'earned card ' || c.id || ' has ' || COUNT(a.id) || ' rewarding views' || \
                        ' for ' || COALESCE(SUM(a.rewarded_seconds), 0) || ' s of ' || c.total_minutes || ' min' \
                    FROM time_cards c LEFT JOIN ad_interactions a ON a.time_card_id = c.id AND a.rewarded_seconds > 0 \
                    WHERE c.kind = 'earned' GROUP BY c.id, c.total_minutes \
                    HAVING COUNT(a.id) <> 1 OR SUM(a.rewarded_seconds) <> c.total_minutes::int8 * 60 \
                    UNION ALL \
                    SELECT 'ad interaction ' || a.id || ' rewarded ' || a.rewarded_seconds || ' s without a signed view' || \
                        ' and an earned card' FROM ad_interactions a LEFT JOIN time_cards c ON c.id = a.time_card_id \
                    WHERE a.rewarded_seconds > 0 AND (a.source <> 'callback' OR a.ad_view_id IS NULL \
                        OR c.kind IS DISTINCT FROM 'earned') \
                    UNION ALL \
                    SELECT 'ad view ' || ad_view_id || ' rewarded ' || COUNT(*) || ' times' FROM ad_interactions \
                    WHERE rewarded_seconds > 0 GROUP BY ad_view_id HAVING COUNT(*) > 1",
    },
];

/// Runs every check and reports, with up to five offending rows each.
///
/// The rules stay runtime-checked SQL, unlike the rest of this crate: they
/// are a table run in a loop, each query also wrapped in `COUNT(*)` and
/// `LIMIT`, which `sqlx::query!` (a string literal per call) cannot express;
/// every test that ends with an audit runs them all against the schema.
pub async fn audit(pool: &PgPool) -> Result<Report> {
    let mut checks = Vec::with_capacity(RULES.len());
    for r in RULES {
        let examined: i64 = sqlx::query_scalar(r.examined).fetch_one(pool).await?;
        let violation_count: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM ({}) o", r.offenders)).fetch_one(pool).await?;
        let violations: Vec<String> = sqlx::query_scalar(&format!("{} LIMIT 5", r.offenders)).fetch_all(pool).await?;
        checks.push(Check { name: r.name, description: r.description, examined, violations, violation_count });
    }
    Ok(Report { checks })
}
