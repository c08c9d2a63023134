//! The worker's running jobs: one task per job, each result paired with its
//! job id, a panicking task included. A session task that panics must still
//! free its slot and be reported to LiveKit as failed, or the worker fills
//! up job by job; its metered session is closed (status `error`) by the
//! meter when the panicking task drops it. Knows nothing of sessions.

use std::collections::HashMap;
use std::future::Future;

use tokio::task::{Id, JoinSet};

/// Running jobs, each known by its LiveKit job id.
pub struct Jobs<T> {
    set: JoinSet<T>,
    ids: HashMap<Id, String>,
}

impl<T: Send + 'static> Default for Jobs<T> {
    fn default() -> Jobs<T> {
        Jobs::new()
    }
}

impl<T: Send + 'static> Jobs<T> {
    pub fn new() -> Jobs<T> {
        Jobs { set: JoinSet::new(), ids: HashMap::new() }
    }

    /// Runs `job` for `job_id`.
    pub fn spawn(&mut self, job_id: String, job: impl Future<Output = T> + Send + 'static) {
        let handle = self.set.spawn(job);
        self.ids.insert(handle.id(), job_id);
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The next job to finish: its id and its result, or `Err` with what the
    /// task's panic said (or that it was cancelled). `None` when none runs.
    pub async fn join_next(&mut self) -> Option<(String, Result<T, String>)> {
        let (id, result) = match self.set.join_next_with_id().await? {
            Ok((id, value)) => (id, Ok(value)),
            Err(e) => {
                let id = e.id();
                let why = if e.is_panic() {
                    let payload = e.into_panic();
                    let message = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic without a message".to_string());
                    format!("the session task panicked: {message}")
                } else {
                    "the session task was cancelled".to_string()
                };
                (id, Err(why))
            }
        };
        Some((self.ids.remove(&id).unwrap_or_default(), result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_job_is_reported_with_its_id_and_the_others_go_on() {
        let mut jobs: Jobs<&'static str> = Jobs::new();
        jobs.spawn("AJ_ok".into(), async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            "done"
        });
        jobs.spawn("AJ_boom".into(), async { panic!("forced for the test") });
        let (id, result) = jobs.join_next().await.unwrap();
        assert_eq!((id.as_str(), result), ("AJ_boom", Err("the session task panicked: forced for the test".into())));
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs.join_next().await.unwrap(), ("AJ_ok".into(), Ok("done")));
        assert!(jobs.is_empty() && jobs.join_next().await.is_none());
    }
}
