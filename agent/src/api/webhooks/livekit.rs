//! `POST /v1/webhooks/livekit`: LiveKit's room events, signed with a JWT (in
//! `Authorization`) made with our API key whose claims carry the body's
//! SHA-256; `livekit-api`'s webhook receiver checks both.
//!
//! `room_finished` ends every session still open in the room and
//! `participant_left` the sessions of the user who left (their identity is
//! their user id), so charging never outlives the room even when the worker
//! missed the event or died. Sessions end in the database, in one
//! transaction, at their last heartbeat, charged what their ticks charged; a
//! meter that still holds one sees it closed elsewhere at its next tick.

use axum::http::header::AUTHORIZATION;
use axum::Json;
use livekit_protocol::participant_info::Kind;
use metering::session::EndReason;
use metering::store::Store;
use metering::UserId;

use super::{Received, Webhook};
use crate::api::error::{ApiError, ErrorBody};

#[utoipa::path(post, path = "/v1/webhooks/livekit", tag = "webhooks",
    request_body(content = Object, description = "A LiveKit webhook event (JSON), signed in Authorization"),
    params(("Authorization" = String, Header, description = "LiveKit's webhook JWT (carries the body's SHA-256)")),
    responses(
        (status = 200, description = "Accepted", body = Received),
        (status = 400, description = "Signature missing or wrong, or not a LiveKit event", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ))]
pub async fn receive(hook: Webhook) -> Result<Json<Received>, ApiError> {
    let Webhook { api, headers, body } = hook;
    let bad = || super::signature_refused("livekit", "the LiveKit webhook signature does not verify");
    let auth = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(bad)?;
    let token = auth.strip_prefix("Bearer ").unwrap_or(auth).trim();
    let body = std::str::from_utf8(&body).map_err(|_| bad())?;
    let event = match api.livekit_webhooks.receive(body, token) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "LiveKit webhook refused");
            return Err(bad());
        }
    };
    let room = event.room.as_ref().map(|r| r.name.clone()).unwrap_or_default();
    let store = Store::new(api.pool.clone());
    let closed = match event.event.as_str() {
        "room_finished" if !room.is_empty() => store.close_room_sessions(&room, None, EndReason::RoomClosed).await?,
        "participant_left" if !room.is_empty() => {
            let Some(p) = event.participant.as_ref() else { return Ok(Json(Received::new("ignored"))) };
            let user = p.identity.parse::<UserId>().ok().filter(|_| p.kind != Kind::Agent as i32);
            match user {
                Some(user) => store.close_room_sessions(&room, Some(user), EndReason::UserLeft).await?,
                None => return Ok(Json(Received::new("ignored: not a user"))),
            }
        }
        _ => return Ok(Json(Received::new("ignored"))),
    };
    for id in &closed {
        tracing::info!(session = %id, %room, event = %event.event, "session closed by a LiveKit webhook");
    }
    if !closed.is_empty() {
        metrics::counter!("mindbot_sessions_closed_by_webhook_total", "event" => event.event.clone())
            .increment(closed.len() as u64);
    }
    Ok(Json(Received::new(format!("sessions_closed: {}", closed.len()))))
}
