//! The LiveKit helpers of the worker tests that the service's tests use too:
//! private servers (stopped, restarted, sending webhooks), names, the
//! server API; all from the test kit.

pub use mindbot_tests::livekit::*;
pub use mindbot_tests::logs;
