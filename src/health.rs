//! What the daemon knows about its own health, shared between the jobs (which report their
//! stages), the queue probe (which reports whether SQS answers) and the admin listener
//! (which serves it as `/readyz` and `/jobs`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One job in flight, as `/jobs` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct JobView {
    pub request_id: String,
    pub stage: &'static str,
    pub elapsed_secs: f64,
    pub stage_elapsed_secs: f64,
}

#[derive(Debug, Clone)]
struct Running {
    stage: &'static str,
    started: Instant,
    stage_started: Instant,
}

/// The daemon's health: whether the queue answered its last probe, when the receive loop last
/// made progress, and the jobs in flight.
#[derive(Debug)]
pub struct Health {
    queue_reachable: AtomicBool,
    loop_progress: Mutex<Instant>,
    jobs: Mutex<BTreeMap<String, Running>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            queue_reachable: AtomicBool::new(false),
            loop_progress: Mutex::new(Instant::now()),
            jobs: Mutex::default(),
        }
    }
}

impl Health {
    /// The receive loop went round, or a receive returned, or it is waiting for job slots
    /// (which the jobs in flight free).
    pub fn loop_progressed(&self) {
        *self.loop_progress.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// How long since the receive loop last made progress.
    pub fn loop_idle(&self) -> Duration {
        self.loop_progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    pub fn set_queue_reachable(&self, ok: bool) {
        self.queue_reachable.store(ok, Ordering::Relaxed);
    }

    pub fn queue_reachable(&self) -> bool {
        self.queue_reachable.load(Ordering::Relaxed)
    }

    /// Records that `request_id` entered `stage`.
    pub fn job_stage(&self, request_id: &str, stage: &'static str) {
        let now = Instant::now();
        self.lock()
            .entry(request_id.to_string())
            .and_modify(|j| {
                j.stage = stage;
                j.stage_started = now;
            })
            .or_insert(Running {
                stage,
                started: now,
                stage_started: now,
            });
    }

    pub fn job_done(&self, request_id: &str) {
        self.lock().remove(request_id);
    }

    /// The jobs in flight, by request id.
    pub fn jobs(&self) -> Vec<JobView> {
        let secs = |d: Duration| d.as_secs_f64();
        self.lock()
            .iter()
            .map(|(id, j)| JobView {
                request_id: id.clone(),
                stage: j.stage,
                elapsed_secs: secs(j.started.elapsed()),
                stage_elapsed_secs: secs(j.stage_started.elapsed()),
            })
            .collect()
    }

    /// A panic elsewhere while the map was held leaves it usable: every update is one
    /// insert or remove, so it is never half-done.
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_appear_with_their_stage_and_go_when_done() {
        let h = Health::default();
        h.job_stage("r1", "querying");
        h.job_stage("r1", "archiving");
        h.job_stage("r2", "queued");
        let jobs = h.jobs();
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            (jobs[0].request_id.as_str(), jobs[0].stage),
            ("r1", "archiving")
        );
        h.job_done("r1");
        assert_eq!(h.jobs().len(), 1);
        assert!(!h.queue_reachable());
        h.set_queue_reachable(true);
        assert!(h.queue_reachable());
    }
}
