//! The remote participants we know of, kept from the server's join response
//! and `ParticipantUpdate`s, turned into joined/left/track events.
//!
//! The server sends whole `ParticipantInfo`s; this file diffs them against
//! what it had so the owner sees only changes. It also answers "whose track
//! is this?" for incoming media.

use std::collections::HashMap;

use livekit_protocol as proto;

use crate::room::{RemoteParticipant, RoomEvent, TrackDescription};

/// Remote participants by sid.
#[derive(Default)]
pub(crate) struct Participants {
    local_sid: String,
    by_sid: HashMap<String, proto::ParticipantInfo>,
}

impl Participants {
    pub(crate) fn new(local_sid: String) -> Self {
        Participants { local_sid, by_sid: HashMap::new() }
    }

    /// Applies infos from the server, pushing the resulting events.
    pub(crate) fn apply(&mut self, infos: &[proto::ParticipantInfo], out: &mut Vec<RoomEvent>) {
        for info in infos {
            if info.sid == self.local_sid {
                continue;
            }
            let gone = info.state == proto::participant_info::State::Disconnected as i32;
            match (self.by_sid.get(&info.sid), gone) {
                (None, true) => {}
                (None, false) => {
                    out.push(RoomEvent::ParticipantJoined(RemoteParticipant::from(info)));
                    if is_active(info) {
                        out.push(RoomEvent::ParticipantActive {
                            identity: info.identity.clone(),
                            sid: info.sid.clone(),
                        });
                    }
                    for track in &info.tracks {
                        out.push(RoomEvent::TrackPublished { participant: info.identity.clone(), track: track.into() });
                    }
                    self.by_sid.insert(info.sid.clone(), info.clone());
                }
                (Some(_), true) => {
                    if let Some(old) = self.by_sid.remove(&info.sid) {
                        for track in &old.tracks {
                            let track_sid = track.sid.clone();
                            out.push(RoomEvent::TrackUnpublished { participant: old.identity.clone(), track_sid });
                        }
                        out.push(RoomEvent::ParticipantLeft { identity: old.identity, sid: old.sid });
                    }
                }
                (Some(old), false) => {
                    // Versions only grow; an older one arriving late is stale.
                    if info.version != 0 && info.version < old.version {
                        continue;
                    }
                    diff(old, info, out);
                    self.by_sid.insert(info.sid.clone(), info.clone());
                }
            }
        }
    }

    /// The identity of the participant publishing `track_sid`.
    pub(crate) fn owner_of_track(&self, track_sid: &str) -> Option<&str> {
        self.by_sid.values().find(|p| p.tracks.iter().any(|t| t.sid == track_sid)).map(|p| p.identity.as_str())
    }

    /// The identity of the participant with `sid`.
    pub(crate) fn identity_of(&self, sid: &str) -> Option<&str> {
        self.by_sid.get(sid).map(|p| p.identity.as_str())
    }
}

fn is_active(info: &proto::ParticipantInfo) -> bool {
    info.state == proto::participant_info::State::Active as i32
}

/// Events for the differences between two versions of one participant.
fn diff(old: &proto::ParticipantInfo, new: &proto::ParticipantInfo, out: &mut Vec<RoomEvent>) {
    if is_active(new) && !is_active(old) {
        out.push(RoomEvent::ParticipantActive { identity: new.identity.clone(), sid: new.sid.clone() });
    }
    if old.name != new.name || old.metadata != new.metadata || old.attributes != new.attributes {
        out.push(RoomEvent::ParticipantUpdated(RemoteParticipant::from(new)));
    }
    for track in &new.tracks {
        if !old.tracks.iter().any(|t| t.sid == track.sid) {
            out.push(RoomEvent::TrackPublished {
                participant: new.identity.clone(),
                track: TrackDescription::from(track),
            });
        }
    }
    for track in &old.tracks {
        if !new.tracks.iter().any(|t| t.sid == track.sid) {
            out.push(RoomEvent::TrackUnpublished { participant: new.identity.clone(), track_sid: track.sid.clone() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(sid: &str, identity: &str, version: u32, tracks: &[&str]) -> proto::ParticipantInfo {
        proto::ParticipantInfo {
            sid: sid.into(),
            identity: identity.into(),
            version,
            state: proto::participant_info::State::Active as i32,
            tracks: tracks.iter().map(|t| proto::TrackInfo { sid: t.to_string(), ..Default::default() }).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_participant_is_active_once_when_its_media_connects() {
        let mut ps = Participants::new("PA_me".into());
        let mut out = Vec::new();
        let mut joined = info("PA_a", "alice", 1, &[]);
        joined.state = proto::participant_info::State::Joined as i32;
        ps.apply(std::slice::from_ref(&joined), &mut out);
        assert!(matches!(&out[..], [RoomEvent::ParticipantJoined(p)] if p.identity == "alice"));
        out.clear();
        ps.apply(&[info("PA_a", "alice", 2, &[])], &mut out);
        assert!(matches!(&out[..], [RoomEvent::ParticipantActive { identity, .. }] if identity == "alice"));
        out.clear();
        ps.apply(&[info("PA_a", "alice", 3, &[])], &mut out);
        assert!(out.is_empty(), "active once: {out:?}");
        // Already active when first seen: joined, then active at once.
        ps.apply(&[info("PA_b", "bob", 1, &[])], &mut out);
        assert!(
            matches!(&out[..], [RoomEvent::ParticipantJoined(_), RoomEvent::ParticipantActive { identity, .. }] if identity == "bob")
        );
    }

    #[test]
    fn join_update_and_leave_produce_events_once() {
        let mut ps = Participants::new("PA_me".into());
        let mut out = Vec::new();
        ps.apply(&[info("PA_me", "me", 1, &[]), info("PA_a", "alice", 1, &[])], &mut out);
        assert!(
            matches!(&out[..], [RoomEvent::ParticipantJoined(p), RoomEvent::ParticipantActive { .. }] if p.identity == "alice")
        );

        out.clear();
        let mut a2 = info("PA_a", "alice", 2, &["TR_1"]);
        a2.attributes.insert("persona".into(), "ada".into());
        ps.apply(std::slice::from_ref(&a2), &mut out);
        assert_eq!(out.len(), 2);
        assert!(matches!(&out[0], RoomEvent::ParticipantUpdated(p) if p.attributes["persona"] == "ada"));
        assert!(
            matches!(&out[1], RoomEvent::TrackPublished { participant, track } if participant == "alice" && track.sid == "TR_1")
        );
        assert_eq!(ps.owner_of_track("TR_1"), Some("alice"));

        out.clear();
        ps.apply(&[info("PA_a", "alice", 1, &[])], &mut out);
        assert!(out.is_empty(), "a stale version changes nothing");

        let mut gone = info("PA_a", "alice", 3, &[]);
        gone.state = proto::participant_info::State::Disconnected as i32;
        ps.apply(&[gone], &mut out);
        assert!(matches!(&out[0], RoomEvent::TrackUnpublished { track_sid, .. } if track_sid == "TR_1"));
        assert!(matches!(&out[1], RoomEvent::ParticipantLeft { identity, .. } if identity == "alice"));
        assert_eq!(ps.identity_of("PA_a"), None);
    }
}
