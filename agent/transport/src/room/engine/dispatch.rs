//! What the engine does with each message from the server.
//!
//! SDP and candidates go to the right peer connection, participant updates
//! become events, `TrackPublished` completes an `AddTrackRequest`, a
//! `LeaveRequest` ends (or resumes) the room, and request responses
//! complete metadata updates. Messages the worker has no use for (speaker
//! changes, connection quality, subscription permissions) are ignored.

use livekit_protocol::{self as proto, signal_response::Message as Msg};
use str0m::change::SdpOffer;

use super::{random_u32, unix_millis, Engine};
use crate::room::{DisconnectReason, RoomError, RoomEvent, TrackKind};

impl Engine {
    /// Handles one server message. Errors are protocol failures that end the room.
    pub(crate) async fn on_signal(&mut self, message: Msg) -> Result<(), RoomError> {
        match message {
            Msg::Offer(offer) => self.on_subscriber_offer(offer).await?,
            Msg::Answer(answer) => self.on_publisher_answer(answer).await?,
            Msg::Trickle(trickle) => match proto::SignalTarget::try_from(trickle.target) {
                Ok(proto::SignalTarget::Publisher) => self.publ.add_remote_candidate_json(&trickle.candidate_init),
                _ => self.sub.add_remote_candidate_json(&trickle.candidate_init),
            },
            Msg::Update(update) => self.apply_participants(&update.participants).await,
            Msg::TrackPublished(published) => self.on_track_published(published).await?,
            // Our own track, unpublished by the server (e.g. through the server API).
            Msg::TrackUnpublished(unpublished) => self.publisher.track_unpublished(&unpublished.track_sid),
            Msg::Leave(leave) => self.on_leave(&leave),
            Msg::RefreshToken(token) => self.signaling.refresh_token(token),
            Msg::PongResp(pong) => self.keepalive.pong(pong.last_ping_timestamp, unix_millis()),
            Msg::RequestResponse(response) => self.signaling.answered(response),
            Msg::Join(_) => tracing::warn!("unexpected second join response"),
            Msg::Reconnect(_) | Msg::Pong(_) => {}
            other => tracing::trace!(message = ?other, "signal message not used"),
        }
        Ok(())
    }

    /// Applies participant infos: events out, and new audio tracks subscribed.
    pub(crate) async fn apply_participants(&mut self, infos: &[proto::ParticipantInfo]) {
        let mut events = Vec::new();
        self.participants.apply(infos, &mut events);
        for info in infos.iter().filter(|i| i.state != proto::participant_info::State::Disconnected as i32) {
            let audio = proto::TrackType::Audio as i32;
            let unmuted = info.tracks.iter().any(|t| t.r#type == audio && !t.muted);
            self.heard.set_muted(&info.identity, !unmuted);
        }
        let mut audio = Vec::new();
        for event in events {
            if let RoomEvent::TrackPublished { track, .. } = &event {
                if track.kind == TrackKind::Audio {
                    audio.push(track.sid.clone());
                }
            }
            self.emit(event);
        }
        if self.options.subscribe_audio && !audio.is_empty() {
            let update = proto::UpdateSubscription { track_sids: audio, subscribe: true, ..Default::default() };
            self.send(proto::signal_request::Message::Subscription(update)).await;
        }
    }

    /// The server's offer for the subscriber connection: answer it.
    async fn on_subscriber_offer(&mut self, offer: proto::SessionDescription) -> Result<(), RoomError> {
        self.subscriber.offered(offer.mid_to_track_id);
        let parsed = SdpOffer::from_sdp_string(&offer.sdp)?;
        let answer = self.sub.rtc().sdp_api().accept_offer(parsed)?;
        let answer = proto::SessionDescription {
            r#type: "answer".into(),
            sdp: answer.to_sdp_string(),
            id: offer.id,
            ..Default::default()
        };
        self.send(proto::signal_request::Message::Answer(answer)).await;
        self.trickle_local(proto::SignalTarget::Subscriber).await;
        Ok(())
    }

    /// The server's answer to our publisher offer.
    async fn on_publisher_answer(&mut self, answer: proto::SessionDescription) -> Result<(), RoomError> {
        if self.publisher.answered(self.publ.rtc(), &answer.sdp)? {
            self.negotiate_publisher().await;
        }
        Ok(())
    }

    /// Offers the publisher's pending changes (data channels, new tracks, ICE restart).
    pub(crate) async fn negotiate_publisher(&mut self) {
        let Some(offer) = self.publisher.offer(self.publ.rtc()) else {
            return;
        };
        self.send(proto::signal_request::Message::Offer(offer)).await;
        self.trickle_local(proto::SignalTarget::Publisher).await;
    }

    /// Sends our candidates for one connection.
    async fn trickle_local(&mut self, target: proto::SignalTarget) {
        let peer = if target == proto::SignalTarget::Publisher { &self.publ } else { &self.sub };
        for candidate_init in peer.local_candidates_json() {
            let trickle = proto::TrickleRequest { candidate_init, target: target as i32, r#final: false };
            self.send(proto::signal_request::Message::Trickle(trickle)).await;
        }
    }

    /// The server accepted an `AddTrackRequest`: add the track to the publisher and offer it.
    async fn on_track_published(&mut self, published: proto::TrackPublishedResponse) -> Result<(), RoomError> {
        let (buffer, complexity) = (self.options.audio_buffer, self.options.opus_complexity);
        if self.publisher.track_published(published, buffer, complexity, &self.audio_wake, random_u32()) {
            self.negotiate_publisher().await;
        }
        Ok(())
    }

    /// A `LeaveRequest` from the server: the room is over, or we should resume.
    fn on_leave(&mut self, leave: &proto::LeaveRequest) {
        let action = proto::leave_request::Action::try_from(leave.action).unwrap_or_default();
        tracing::info!(?action, reason = leave.reason, "the server asked us to leave");
        match action {
            proto::leave_request::Action::Resume => {
                self.signaling.drop_connection();
                self.signal_lost("the server asked to resume");
            }
            // A full reconnect would be a new participant: the owner decides whether to rejoin.
            proto::leave_request::Action::Reconnect | proto::leave_request::Action::Disconnect => {
                self.finished = Some(DisconnectReason::from_server(leave.reason));
            }
        }
    }
}
