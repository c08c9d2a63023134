//! When audio last arrived from each remote participant, and when ours
//! last went out.
//!
//! The SFU forwards a publisher's packets the moment they arrive and stops
//! the moment they stop, so a remote participant's last packet is the
//! freshest sign that they are still there. The server's own word that a
//! participant left can come later: in a multi-node deployment it is
//! relayed between nodes (through Redis), and while that relay is down it
//! waits. A caller that charges for presence uses this to tell the two
//! apart.
//!
//! A participant whose audio tracks are all muted has no last packet: the
//! server stops forwarding a muted track, and silence there says nothing.
//!
//! Our own last frame out tells a caller whether anything was being said
//! to a participant while they were silent: the one thing a client that
//! stops sending could want to hear for free.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Shared between the room's engine (which writes it per packet) and the
/// owner of the `Room` (which reads it). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct AudioHeard(Arc<Mutex<Inner>>);

#[derive(Debug, Default)]
struct Inner {
    remote: HashMap<String, Heard>,
    /// When our last audio frame went out (any of our tracks).
    sent: Option<Instant>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Heard {
    last: Option<Instant>,
    muted: bool,
}

impl AudioHeard {
    /// When the last audio packet from `identity` arrived, if any arrived
    /// since they last unmuted (and they are not muted now).
    pub fn last(&self, identity: &str) -> Option<Instant> {
        self.lock().remote.get(identity).and_then(|h| h.last)
    }

    /// When our own last audio frame went out, if one ever did.
    pub fn last_sent(&self) -> Option<Instant> {
        self.lock().sent
    }

    pub(crate) fn sent(&self, at: Instant) {
        self.lock().sent = Some(at);
    }

    pub(crate) fn packet(&self, identity: &str, at: Instant) {
        let mut inner = self.lock();
        match inner.remote.get_mut(identity) {
            Some(h) if h.muted => {}
            Some(h) => h.last = Some(at),
            None => {
                inner.remote.insert(identity.to_string(), Heard { last: Some(at), muted: false });
            }
        }
    }

    /// Whether `identity` has no unmuted audio track (muted, or none
    /// published); muting forgets the last packet.
    pub(crate) fn set_muted(&self, identity: &str, muted: bool) {
        let mut inner = self.lock();
        let h = inner.remote.entry(identity.to_string()).or_default();
        if muted {
            h.last = None;
        }
        h.muted = muted;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_last_packet_is_kept_until_a_mute_and_after_it_only_packets_since_the_unmute_count() {
        let heard = AudioHeard::default();
        let t0 = Instant::now();
        assert_eq!(heard.last("u"), None);
        heard.packet("u", t0);
        heard.packet("u", t0 + Duration::from_millis(20));
        assert_eq!(heard.last("u"), Some(t0 + Duration::from_millis(20)));
        heard.set_muted("u", true);
        assert_eq!(heard.last("u"), None, "a muted track's silence says nothing");
        heard.packet("u", t0 + Duration::from_millis(40));
        assert_eq!(heard.last("u"), None, "a packet while muted does not count");
        heard.set_muted("u", false);
        assert_eq!(heard.last("u"), None);
        heard.packet("u", t0 + Duration::from_millis(60));
        assert_eq!(heard.last("u"), Some(t0 + Duration::from_millis(60)));
    }

    #[test]
    fn our_last_frame_out_is_kept_apart_from_what_we_heard() {
        let heard = AudioHeard::default();
        let t0 = Instant::now();
        assert_eq!(heard.last_sent(), None);
        heard.sent(t0);
        heard.sent(t0 + Duration::from_millis(20));
        assert_eq!(heard.last_sent(), Some(t0 + Duration::from_millis(20)));
        assert_eq!(heard.last("u"), None, "our own audio is nobody's presence");
        heard.set_muted("u", true);
        assert_eq!(heard.last_sent(), Some(t0 + Duration::from_millis(20)));
    }
}
