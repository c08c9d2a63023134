//! The LiveKit agent worker: how jobs reach this process.
//!
//! A worker holds one WebSocket to the server's `/agent` endpoint, registers
//! under an agent name, answers job offers within its capacity, and hands each
//! assignment (room, dispatch metadata, join token) to its owner as a
//! [`WorkerEvent`]. It reports its load and the owner's job statuses, and
//! survives a dropped connection by registering again while jobs go on. It
//! does not join rooms or run sessions (that is `room` and `session`), and it
//! knows nothing of users or money.
//!
//! ```text
//! let (worker, mut events) = Worker::connect(options).await?;
//! while let Some(event) = events.recv().await {
//!     if let WorkerEvent::Assigned(job) = event { /* join job.url with job.token; later: */
//!         worker.job_status(&job.job.id, JobStatus::Success).await?; }
//! }
//! ```

mod error;
mod job;
mod options;
mod run;
mod slots;
mod socket;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use error::WorkerError;
pub use job::{AgentParticipant, Assignment, Job, JobStatus, TerminationReason};
pub use options::{AcceptFn, Backoff, LoadFn, TokenFn, WorkerOptions};

/// Events held for the owner before the worker waits for it to read them.
const EVENT_BUFFER: usize = 64;
/// Commands held for the worker's task.
const COMMAND_BUFFER: usize = 64;

/// What the worker tells its owner, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // a few events per job; boxing would only add a deref for the owner
pub enum WorkerEvent {
    /// Registered with the server: at start and after every reconnect.
    Connected { worker_id: String },
    /// A job to run: join `url` with `token`. Its slot stays taken until the
    /// owner reports its end with `job_status`.
    Assigned(Assignment),
    /// The server asked to end a job (dispatch deleted, or the agent left the
    /// room). The owner still reports the end to free the slot.
    Terminated { job_id: String, reason: TerminationReason },
    /// The connection dropped; the worker is reconnecting and running jobs go on.
    Disconnected { reason: String },
}

/// The owner's end of the event stream; it ends when the worker stops.
pub type WorkerEvents = mpsc::Receiver<WorkerEvent>;

/// What handles ask of the worker's task.
#[derive(Debug)]
enum Command {
    JobStatus { job_id: String, status: JobStatus },
    Drain,
}

/// A cheap, cloneable way for sessions to report on their job.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    commands: mpsc::Sender<Command>,
}

impl WorkerHandle {
    /// Reports a job's status to the server; an end (success or failure) frees its slot.
    pub async fn job_status(&self, job_id: &str, status: JobStatus) -> Result<(), WorkerError> {
        self.send(Command::JobStatus { job_id: job_id.to_string(), status }).await
    }

    /// Stops taking jobs (the server sees the worker as full); running jobs go on.
    pub async fn drain(&self) -> Result<(), WorkerError> {
        self.send(Command::Drain).await
    }

    async fn send(&self, command: Command) -> Result<(), WorkerError> {
        self.commands.send(command).await.map_err(|_| WorkerError::Stopped)
    }
}

/// A registered worker. Dropping it stops the worker and closes the connection.
#[derive(Debug)]
pub struct Worker {
    handle: WorkerHandle,
    cancel: CancellationToken,
    task: Option<JoinHandle<Result<(), WorkerError>>>,
}

impl Worker {
    /// Connects and registers once, failing fast (bad URL, server down, key
    /// refused), then runs the worker on its own task.
    #[tracing::instrument(skip_all, fields(agent_name = %options.agent_name, url = %options.url))]
    pub async fn connect(options: WorkerOptions) -> Result<(Worker, WorkerEvents), WorkerError> {
        options.validate().map_err(WorkerError::InvalidOptions)?;
        let (socket, registered) = socket::open(&options).await?;
        let (events_tx, events) = mpsc::channel(EVENT_BUFFER);
        let (commands_tx, commands) = mpsc::channel(COMMAND_BUFFER);
        let cancel = CancellationToken::new();
        let actor = run::Actor::new(options, events_tx, commands, cancel.clone());
        let task = tokio::spawn(actor.run(socket, registered).in_current_span());
        Ok((Worker { handle: WorkerHandle { commands: commands_tx }, cancel, task: Some(task) }, events))
    }

    /// A handle for sessions to report on their jobs.
    pub fn handle(&self) -> WorkerHandle {
        self.handle.clone()
    }

    /// See [`WorkerHandle::job_status`].
    pub async fn job_status(&self, job_id: &str, status: JobStatus) -> Result<(), WorkerError> {
        self.handle.job_status(job_id, status).await
    }

    /// See [`WorkerHandle::drain`].
    pub async fn drain(&self) -> Result<(), WorkerError> {
        self.handle.drain().await
    }

    /// Closes the connection and waits for the worker's task to end.
    pub async fn shutdown(mut self) -> Result<(), WorkerError> {
        self.cancel.cancel();
        self.join().await
    }

    /// Waits until the worker stops on its own: `Err(ConnectionLost)` when reconnecting failed.
    pub async fn wait(mut self) -> Result<(), WorkerError> {
        self.join().await
    }

    async fn join(&mut self) -> Result<(), WorkerError> {
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Err(WorkerError::Stopped)),
            None => Ok(()),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
