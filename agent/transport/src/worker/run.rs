//! The worker's task: one loop that owns the socket and the job slots.
//!
//! Everything that changes capacity (offers, assignments, ends reported by
//! the owner, timeouts) happens on this one task, in order, so no lock is
//! needed and no two decisions can race. When the connection drops the loop
//! reconnects with backoff and registers again, still taking the owner's
//! job reports meanwhile; running jobs are never touched. It must not block:
//! the owner's callbacks run here and must be quick.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use livekit_protocol::{self as proto, server_message, worker_message, WorkerStatus};
use tokio::sync::mpsc;
use tokio::time::{interval_at, sleep_until, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::error::WorkerError;
use super::job::{AgentParticipant, Assignment, Job, JobStatus, TerminationReason};
use super::options::WorkerOptions;
use super::slots::{Answer, Assigned, Slots};
use super::socket::{self, Incoming, Registered, Socket};
use super::{Command, WorkerEvent};

/// The attribute LiveKit's Python framework puts on agent participants, naming the agent.
const AGENT_NAME_ATTRIBUTE: &str = "lk.agent.name";

/// Why serving one connection stopped.
enum End {
    /// Shutdown asked for, or the owner is gone.
    Stop,
    /// The connection failed; reconnect.
    Lost(String),
}

type Step = Result<(), End>;

/// The worker's state, owned by its task.
pub(super) struct Actor {
    options: WorkerOptions,
    slots: Slots,
    events: mpsc::Sender<WorkerEvent>,
    commands: mpsc::Receiver<Command>,
    cancel: CancellationToken,
    /// The last status sent on this connection, so changes are sent at once.
    reported: Option<(WorkerStatus, u32)>,
}

impl Actor {
    pub(super) fn new(
        options: WorkerOptions,
        events: mpsc::Sender<WorkerEvent>,
        commands: mpsc::Receiver<Command>,
        cancel: CancellationToken,
    ) -> Actor {
        let slots = Slots::new(options.max_jobs, options.load_threshold);
        Actor { options, slots, events, commands, cancel, reported: None }
    }

    /// Serves `socket`, reconnecting when it drops, until shutdown or until reconnecting fails.
    pub(super) async fn run(mut self, mut socket: Socket, mut registered: Registered) -> Result<(), WorkerError> {
        loop {
            let end = match self.registered(&mut socket, &registered).await {
                Ok(()) => self.serve(&mut socket).await,
                Err(end) => end,
            };
            let reason = match end {
                End::Stop => {
                    socket.close().await;
                    return Ok(());
                }
                End::Lost(reason) => reason,
            };
            warn!(worker_id = %registered.worker_id, %reason, "agent connection lost; reconnecting");
            socket.close().await;
            self.slots.drop_pending();
            self.reported = None;
            if self.emit(WorkerEvent::Disconnected { reason }).await.is_err() {
                return Ok(());
            }
            match self.reconnect().await? {
                Some((s, r)) => (socket, registered) = (s, r),
                None => return Ok(()),
            }
        }
    }

    /// Starts a registration: jobs still running, status, and the event to the owner.
    async fn registered(&mut self, socket: &mut Socket, registered: &Registered) -> Step {
        info!(
            worker_id = %registered.worker_id,
            server = %registered.server_version,
            node = %registered.node_id,
            agent_name = %self.options.agent_name,
            "worker registered"
        );
        let job_ids: Vec<String> = self.slots.running().cloned().collect();
        if !job_ids.is_empty() {
            // Like LiveKit's Python framework: tell the server which jobs live on
            // (an open-source server ignores it; its job records went with the old connection).
            self.send(socket, worker_message::Message::MigrateJob(proto::MigrateJobRequest { job_ids })).await?;
        }
        self.send_status(socket, true).await?;
        self.emit(WorkerEvent::Connected { worker_id: registered.worker_id.clone() }).await
    }

    async fn serve(&mut self, socket: &mut Socket) -> End {
        let options = &self.options;
        let mut status_tick = interval_at(Instant::now() + options.status_interval, options.status_interval);
        let mut ping_tick = interval_at(Instant::now() + options.ping_interval, options.ping_interval);
        status_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ping_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        loop {
            let deadline = self.slots.next_deadline().map(Instant::from_std);
            let step = tokio::select! {
                _ = self.cancel.cancelled() => Err(End::Stop),
                command = self.commands.recv() => match command {
                    Some(command) => self.command(command, socket).await,
                    None => Err(End::Stop),
                },
                incoming = socket.recv() => {
                    last_heard = Instant::now();
                    match incoming {
                        Ok(Some(Incoming::Message(message))) => self.message(*message, socket).await,
                        Ok(Some(Incoming::Heartbeat)) => Ok(()),
                        Ok(None) => Err(End::Lost("the server closed the connection".into())),
                        Err(e) => Err(End::Lost(e.to_string())),
                    }
                }
                _ = status_tick.tick() => self.send_status(socket, true).await,
                _ = ping_tick.tick() => self.ping(socket, last_heard.elapsed()).await,
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.expire(socket).await
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn message(&mut self, message: server_message::Message, socket: &mut Socket) -> Step {
        match message {
            server_message::Message::Availability(request) => self.offer(request, socket).await,
            server_message::Message::Assignment(assignment) => self.assignment(assignment, socket).await,
            server_message::Message::Termination(t) => {
                info!(job_id = %t.job_id, "server ended the job");
                let reason = TerminationReason::ServerRequested;
                self.emit(WorkerEvent::Terminated { job_id: t.job_id, reason }).await
            }
            server_message::Message::Pong(pong) => {
                debug!(rtt_ms = now_millis() - pong.last_timestamp, "pong");
                Ok(())
            }
            server_message::Message::GoAway(away) => {
                Err(End::Lost(format!("the server is going away: {}", away.reason)))
            }
            server_message::Message::Register(_) => {
                warn!("ignoring a second register response");
                Ok(())
            }
        }
    }

    /// Answers an availability request: yes (taking a slot) while under
    /// capacity, not draining, and the owner's `accept_fn` agrees; yes
    /// without a new slot for a job that runs here already (re-offered, e.g.
    /// `resuming` after a reconnect), whose session goes on.
    async fn offer(&mut self, request: proto::AvailabilityRequest, socket: &mut Socket) -> Step {
        let Some(job) = request.job else {
            warn!("availability request without a job");
            return Ok(());
        };
        let job = Job::from_proto(&job);
        metrics::counter!("mindbot_jobs_offered_total").increment(1);
        let slot = self.slots.answer(&job.id, self.load());
        let declined = match slot {
            Answer::Decline(reason) => Some(reason),
            Answer::Take | Answer::Keep => None,
        };
        let participant = if declined.is_none() { self.choose(&job) } else { None };
        match (participant.is_some(), declined) {
            (true, _) => metrics::counter!("mindbot_jobs_accepted_total").increment(1),
            (false, reason) => {
                let reason = reason.unwrap_or("declined");
                metrics::counter!("mindbot_jobs_declined_total", "reason" => reason).increment(1)
            }
        }
        info!(job_id = %job.id, room = %job.room, accepted = participant.is_some(), resuming = request.resuming, "job offered");
        let mut answer = proto::AvailabilityResponse { job_id: job.id.clone(), ..Default::default() };
        if let Some(p) = participant {
            answer.available = true;
            answer.participant_identity.clone_from(&p.identity);
            answer.participant_name.clone_from(&p.name);
            answer.participant_metadata.clone_from(&p.metadata);
            answer.participant_attributes.clone_from(&p.attributes);
            answer
                .participant_attributes
                .entry(AGENT_NAME_ATTRIBUTE.to_string())
                .or_insert_with(|| self.options.agent_name.clone());
            if slot == Answer::Take {
                let hold = self.options.assignment_timeout;
                self.slots.reserve(&job.id, p, std::time::Instant::now(), hold);
            }
        }
        self.send(socket, worker_message::Message::Availability(answer)).await?;
        self.send_status(socket, false).await
    }

    /// The agent participant for an offered job, or `None` to decline it.
    fn choose(&self, job: &Job) -> Option<AgentParticipant> {
        let mut chosen = match &self.options.accept_fn {
            Some(accept) => accept(job)?,
            None => AgentParticipant::for_job(job),
        };
        if chosen.identity.is_empty() {
            chosen.identity = AgentParticipant::for_job(job).identity;
        }
        Some(chosen)
    }

    async fn assignment(&mut self, assignment: proto::JobAssignment, socket: &mut Socket) -> Step {
        let Some(job) = assignment.job else {
            warn!("assignment without a job");
            return Ok(());
        };
        let job = Job::from_proto(&job);
        let participant = match self.slots.assign(&job.id) {
            Assigned::Expected(participant) => participant,
            Assigned::Duplicate => {
                warn!(job_id = %job.id, "ignoring a second assignment of a running job");
                return Ok(());
            }
            Assigned::Unknown => {
                // Our yes timed out (or never was): the slot may be gone. Say so,
                // so the server does not count the job as running here.
                warn!(job_id = %job.id, room = %job.room, "refusing an assignment that came after the offer timed out");
                let refused = JobStatus::Failed("the assignment came after the worker stopped waiting".into());
                return self.send(socket, worker_message::Message::UpdateJob(refused.to_proto(&job.id))).await;
            }
        };
        let url = assignment.url.filter(|u| !u.is_empty()).unwrap_or_else(|| self.options.url.clone());
        info!(job_id = %job.id, room = %job.room, dispatch_id = %job.dispatch_id, "job assigned");
        let assigned = Assignment { job, token: assignment.token, url, participant_identity: participant.identity };
        self.emit(WorkerEvent::Assigned(assigned)).await?;
        self.send_status(socket, false).await
    }

    /// Gives back the slots of offers whose assignment never came.
    async fn expire(&mut self, socket: &mut Socket) -> Step {
        for job_id in self.slots.expire(std::time::Instant::now()) {
            warn!(%job_id, after = ?self.options.assignment_timeout, "no assignment for an accepted offer; slot released");
        }
        self.send_status(socket, false).await
    }

    async fn command(&mut self, command: Command, socket: &mut Socket) -> Step {
        self.apply(&command);
        if let Command::JobStatus { job_id, status } = command {
            self.send(socket, worker_message::Message::UpdateJob(status.to_proto(&job_id))).await?;
        }
        self.send_status(socket, false).await
    }

    /// Applies an owner's command to the slots.
    fn apply(&mut self, command: &Command) {
        match command {
            Command::JobStatus { job_id, status } => {
                info!(%job_id, ?status, "job status");
                if status.is_end() && !self.slots.finish(job_id) {
                    debug!(%job_id, "end reported for a job that holds no slot");
                }
            }
            Command::Drain => {
                info!("draining: no new jobs, running jobs go on");
                self.slots.drain();
            }
        }
    }

    async fn ping(&mut self, socket: &mut Socket, silent_for: Duration) -> Step {
        if silent_for > self.options.ping_timeout {
            return Err(End::Lost(format!("no word from the server for {silent_for:?}")));
        }
        self.send(socket, worker_message::Message::Ping(proto::WorkerPing { timestamp: now_millis() })).await
    }

    /// Sends `update_worker`: always when `force`, else only if status or job count changed.
    async fn send_status(&mut self, socket: &mut Socket, force: bool) -> Step {
        let load = self.load();
        let status = self.slots.status(load);
        let job_count = self.slots.running().count() as u32;
        if !force && self.reported == Some((status, job_count)) {
            return Ok(());
        }
        if self.reported.map(|(s, _)| s) != Some(status) {
            info!(?status, load, job_count, "worker status");
        }
        self.reported = Some((status, job_count));
        let update = proto::UpdateWorkerStatus { status: Some(status as i32), load, job_count, ..Default::default() };
        self.send(socket, worker_message::Message::UpdateWorker(update)).await
    }

    /// The load to report, in 0..=1.
    fn load(&self) -> f32 {
        let load = self.options.load_fn.as_ref().map_or_else(|| self.slots.default_load(), |f| f());
        if load.is_nan() {
            1.0
        } else {
            load.clamp(0.0, 1.0)
        }
    }

    async fn send(&mut self, socket: &mut Socket, message: worker_message::Message) -> Step {
        socket.send(message).await.map_err(|e| End::Lost(e.to_string()))
    }

    /// Hands an event to the owner; stops the worker if the owner is gone.
    async fn emit(&self, event: WorkerEvent) -> Step {
        tokio::select! {
            _ = self.cancel.cancelled() => Err(End::Stop),
            sent = self.events.send(event) => sent.map_err(|_| End::Stop),
        }
    }

    /// Tries to connect and register again with backoff; `None` on shutdown.
    async fn reconnect(&mut self) -> Result<Option<(Socket, Registered)>, WorkerError> {
        let policy = self.options.reconnect;
        let mut last = String::from("no attempt allowed");
        for attempt in 1..=policy.attempts {
            if !self.wait_offline(policy.delay(attempt)).await {
                return Ok(None);
            }
            let opened = tokio::select! {
                _ = self.cancel.cancelled() => return Ok(None),
                opened = socket::open(&self.options) => opened,
            };
            match opened {
                Ok(connected) => return Ok(Some(connected)),
                Err(e) => {
                    warn!(attempt, of = policy.attempts, error = %e, "reconnect failed");
                    last = e.to_string();
                }
            }
        }
        Err(WorkerError::ConnectionLost { attempts: policy.attempts, last })
    }

    /// Waits `wait` while still taking the owner's commands; false on shutdown.
    async fn wait_offline(&mut self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return false,
                _ = sleep_until(until) => return true,
                command = self.commands.recv() => match command {
                    Some(command) => {
                        // The server forgot this connection's jobs; only the slots matter now.
                        self.apply(&command);
                    }
                    None => return false,
                },
            }
        }
    }
}

fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
