//! The job as the rest of the agent sees it, without protobuf types.
//!
//! A dispatch reaches the worker as a `livekit.Job`; the owner needs only a
//! few of its fields (which room, which dispatch, the metadata string the
//! dispatch carried). These types hold those, plus what the worker reports
//! back about a job. Nothing here talks to the network.

use livekit_protocol as proto;

/// A job LiveKit offered or assigned to this worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The server's job id (`AJ_...`).
    pub id: String,
    /// The dispatch that created the job (`AD_...`); empty for automatic dispatch.
    pub dispatch_id: String,
    /// The room the agent is to join.
    pub room: String,
    /// The room's server id (`RM_...`).
    pub room_sid: String,
    /// The participant the job is about, for participant and publisher jobs; `None` for room jobs.
    pub participant_identity: Option<String>,
    /// The dispatch's metadata string, unchanged (ours is JSON).
    pub metadata: String,
    /// The agent name the job was dispatched to.
    pub agent_name: String,
}

impl Job {
    /// The job's fields from the server's message.
    pub(super) fn from_proto(job: &proto::Job) -> Job {
        let room = job.room.as_ref();
        Job {
            id: job.id.clone(),
            dispatch_id: job.dispatch_id.clone(),
            room: room.map(|r| r.name.clone()).unwrap_or_default(),
            room_sid: room.map(|r| r.sid.clone()).unwrap_or_default(),
            participant_identity: job.participant.as_ref().map(|p| p.identity.clone()),
            metadata: job.metadata.clone(),
            agent_name: job.agent_name.clone(),
        }
    }
}

/// A job this worker accepted and the server assigned: everything needed to join the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub job: Job,
    /// The join token the server minted for the agent participant (valid one hour).
    pub token: String,
    /// Where to join: the assignment's URL, or the worker's LiveKit URL when the server gave none.
    pub url: String,
    /// The identity the agent participant will have in the room.
    pub participant_identity: String,
}

/// Who the agent participant is in the room; chosen when the worker accepts a job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentParticipant {
    pub identity: String,
    pub name: String,
    pub metadata: String,
    pub attributes: std::collections::HashMap<String, String>,
}

impl AgentParticipant {
    /// The default: identity `agent-<job id>`, named after the agent.
    pub fn for_job(job: &Job) -> AgentParticipant {
        AgentParticipant { identity: format!("agent-{}", job.id), name: job.agent_name.clone(), ..Default::default() }
    }
}

/// What the owner reports about a running job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    /// The agent is at work in the room.
    Running,
    /// The job ended normally; frees its slot.
    Success,
    /// The job ended with an error, shown on LiveKit's side; frees its slot.
    Failed(String),
}

impl JobStatus {
    /// Whether the job is over (its slot is free again).
    pub fn is_end(&self) -> bool {
        !matches!(self, JobStatus::Running)
    }

    /// The `UpdateJobStatus` message for `job_id`.
    pub(super) fn to_proto(&self, job_id: &str) -> proto::UpdateJobStatus {
        let (status, error) = match self {
            JobStatus::Running => (proto::JobStatus::JsRunning, String::new()),
            JobStatus::Success => (proto::JobStatus::JsSuccess, String::new()),
            JobStatus::Failed(error) => (proto::JobStatus::JsFailed, error.clone()),
        };
        proto::UpdateJobStatus { job_id: job_id.to_string(), status: status as i32, error }
    }
}

/// Why a job was ended from outside the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminationReason {
    /// The server sent `termination`: the dispatch was deleted, or the agent
    /// participant left (or was removed from) the room.
    ServerRequested,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_room_dispatch_and_metadata_from_the_server_job() {
        let job = proto::Job {
            id: "AJ_1".into(),
            dispatch_id: "AD_1".into(),
            room: Some(proto::Room { name: "r1".into(), sid: "RM_1".into(), ..Default::default() }),
            metadata: r#"{"user_id":"u"}"#.into(),
            agent_name: "mindbot".into(),
            ..Default::default()
        };
        let job = Job::from_proto(&job);
        assert_eq!(
            (job.room.as_str(), job.dispatch_id.as_str(), job.participant_identity.as_deref()),
            ("r1", "AD_1", None)
        );
        assert_eq!(job.metadata, r#"{"user_id":"u"}"#);
        assert_eq!(AgentParticipant::for_job(&job).identity, "agent-AJ_1");
    }

    #[test]
    fn failed_status_carries_its_error() {
        let update = JobStatus::Failed("boom".into()).to_proto("AJ_1");
        assert_eq!((update.status, update.error.as_str()), (proto::JobStatus::JsFailed as i32, "boom"));
        assert!(!JobStatus::Running.is_end() && JobStatus::Success.is_end());
    }
}
