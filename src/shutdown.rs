//! The shutdown tree: one [`Shutdown`] reaches every task the daemon starts.
//!
//! - `stop` is cancelled by the first SIGTERM or SIGINT: the receive loop stops receiving,
//!   the sweeper and the queue probe stop, `/readyz` answers 503, and every job in hand has
//!   `worker.shutdown_grace_secs` to finish before it releases its message.
//! - `exit` (the parent of `stop`) is cancelled once the jobs are drained or the drain
//!   deadline has passed: the admin listener, the systemd watchdog and any heartbeat still
//!   running end with it.
//! - Every task is spawned on one [`TaskTracker`], so [`Shutdown::finish`] can wait for all of
//!   them, within a deadline.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the drain deadline allows beyond the jobs' grace period: releasing the messages of
/// the jobs stopped at the end of it (one DynamoDB and one SQS call each, with the SDK's
/// retries).
pub const RELEASE_MARGIN: Duration = Duration::from_secs(30);

/// How long the tasks that outlive the jobs (admin listener, watchdog) get to end.
const EXIT_DEADLINE: Duration = Duration::from_secs(5);

/// The daemon's cancellation tokens and its task tracker. Cheap to clone; clones share all.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    exit: CancellationToken,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        let exit = CancellationToken::new();
        Shutdown {
            stop: exit.child_token(),
            exit,
            tasks: TaskTracker::new(),
        }
    }

    /// Stop taking work (the first signal).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Completes when work must stop being taken.
    pub async fn stopping(&self) {
        self.stop.cancelled().await;
    }

    /// A token cancelled when the daemon exits, for a task that must outlive the jobs.
    pub fn exit_token(&self) -> CancellationToken {
        self.exit.clone()
    }

    /// A token for one job's helpers (its heartbeat): cancelled when the job drops it or the
    /// daemon exits, whichever comes first.
    pub fn job_token(&self) -> CancellationToken {
        self.exit.child_token()
    }

    /// Spawns a task that [`Shutdown::finish`] waits for.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// Runs `task` until it ends or work must stop, whichever comes first.
    pub fn spawn_until_stopped<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = task => {}
                () = stop.cancelled() => {}
            }
        })
    }

    /// Ends everything: cancels `exit`, then waits for every tracked task, at most
    /// [`EXIT_DEADLINE`]. Returns whether all of them ended in time.
    pub async fn finish(&self) -> bool {
        self.stop.cancel();
        self.exit.cancel();
        self.tasks.close();
        let ended = tokio::time::timeout(EXIT_DEADLINE, self.tasks.wait())
            .await
            .is_ok();
        if !ended {
            tracing::warn!(
                tasks = self.tasks.len(),
                "tasks still running at exit; leaving them"
            );
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stopping_reaches_loops_and_finishing_reaches_everything() {
        let shutdown = Shutdown::new();
        let looped = shutdown.spawn_until_stopped(std::future::pending());
        let exit = shutdown.exit_token();
        let listener = shutdown.spawn(async move { exit.cancelled().await });
        let job = shutdown.job_token();
        assert!(!shutdown.is_stopping());
        shutdown.stop();
        shutdown.stopping().await;
        assert!(looped.await.is_ok());
        assert!(!listener.is_finished(), "the listener outlives the jobs");
        assert!(!job.is_cancelled());
        assert!(shutdown.finish().await);
        assert!(job.is_cancelled());
        assert!(listener.is_finished());
    }
}
