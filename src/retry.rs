//! The one retry policy: capped exponential backoff with jitter, used for every wait the
//! daemon makes after something did not work or is not done yet — a transient failure inside
//! a stage, DescribeStatement polling, a failed ReceiveMessage.
//!
//! It stacks on the AWS SDK's own retries, which are set here too ([`SDK_MAX_ATTEMPTS`],
//! standard mode): a failure reaches [`retrying`] only after the SDK made all its attempts,
//! so one step of a stage makes at most `(worker.stage_retries + 1) × SDK_MAX_ATTEMPTS` calls
//! (4 × 3 = 12 with the defaults) and waits at most `stage_retries` backoff delays of ours
//! (0.2 + 0.4 + 0.8 s, plus up to half again of jitter) on top of the SDK's own (at most
//! 20 s each). After that the message is released and the queue's visibility timeout is
//! the next backoff.

use std::future::Future;
use std::time::Duration;

use crate::config::{RedshiftSettings, Settings};
use crate::error::JobError;
use crate::metrics::Metrics;

/// Attempts the AWS SDK makes of one call before its error reaches the caller (its standard
/// retry mode; the first attempt counts).
pub const SDK_MAX_ATTEMPTS: u32 = 3;
/// The longest the SDK waits between its attempts (its standard mode's cap).
pub const SDK_MAX_BACKOFF: Duration = Duration::from_secs(20);

/// The steps of a job that [`retrying`] retries, as `retries_total{operation}` names them.
pub mod step {
    pub const CREATE_STATE: &str = "create state";
    pub const CLAIM: &str = "claim";
    pub const EXECUTE_STATEMENT: &str = "execute statement";
    pub const BUILD_ARCHIVE: &str = "build archive";
    pub const RECORD_TRANSITION: &str = "record transition";
    pub const SEND_EMAIL: &str = "send email";
    pub const TAKE_SLOT: &str = "take slot";
    /// All of them (their series start at zero).
    pub const ALL: &[&str] = &[
        CREATE_STATE,
        CLAIM,
        EXECUTE_STATEMENT,
        BUILD_ARCHIVE,
        RECORD_TRANSITION,
        SEND_EMAIL,
        TAKE_SLOT,
    ];
}

/// Capped exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// No delay grows past this (before jitter).
    pub max: Duration,
    /// Each delay is the previous one times this, in percent (200: doubling).
    pub growth_percent: u32,
    /// Up to this share of the delay, in percent, is added at random, so that replicas that
    /// failed together do not retry together.
    pub jitter_percent: u32,
}

impl Backoff {
    /// Between retries of a transient failure inside a stage: short, because the SDK has
    /// already waited, and a stage that keeps failing releases its message instead.
    pub const STAGE: Backoff = Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(10),
        growth_percent: 200,
        jitter_percent: 50,
    };

    /// Between failed ReceiveMessage calls: up to a minute, so a queue that is down is not
    /// hammered by every replica, and a queue that comes back is used within a minute.
    pub const RECEIVE: Backoff = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(60),
        growth_percent: 200,
        jitter_percent: 25,
    };

    /// Between tries for a fleet-wide slot while the fleet is at its cap: soon at first, then
    /// every few seconds, with wide jitter so that waiting replicas do not try together.
    pub const SLOT: Backoff = Backoff {
        initial: Duration::from_millis(500),
        max: Duration::from_secs(5),
        growth_percent: 150,
        jitter_percent: 50,
    };

    /// Between deliveries of a completion event to a destination that failed: 1, 2, 4 s…,
    /// long enough for a receiver's restart, short enough that the job does not hold its
    /// slot for long (`events.max_attempts` bounds the count).
    pub const EVENT: Backoff = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(8),
        growth_percent: 200,
        jitter_percent: 25,
    };

    /// Between DescribeStatement polls: starts at `redshift.poll_initial_ms` (the statement's
    /// wait starts at the learned first delay instead: `crate::redshift::FirstPoll`) and grows
    /// by half each poll to `redshift.poll_max_ms`, so short queries finish fast and long ones
    /// cost one call every few seconds.
    pub fn polling(settings: &RedshiftSettings) -> Backoff {
        Backoff {
            initial: Duration::from_millis(settings.poll_initial_ms),
            max: Duration::from_millis(settings.poll_max_ms),
            growth_percent: 150,
            jitter_percent: 25,
        }
    }

    /// Extra pauses after DescribeStatement calls that failed (throttled, most likely): from
    /// `redshift.poll_max_ms`, doubling to a minute, so a fleet that overruns the account's
    /// quota spreads its polls out instead of abandoning running statements.
    pub fn unanswered_polls(settings: &RedshiftSettings) -> Backoff {
        Backoff {
            initial: Duration::from_millis(settings.poll_max_ms),
            max: crate::redshift::MAX_UNANSWERED_PAUSE,
            growth_percent: 200,
            jitter_percent: 50,
        }
    }

    /// The delays, one per wait, for ever.
    pub fn delays(self) -> Delays {
        Delays {
            backoff: self,
            next: self.initial.min(self.max),
        }
    }
}

/// The successive delays of a [`Backoff`].
#[derive(Debug, Clone)]
pub struct Delays {
    backoff: Backoff,
    next: Duration,
}

impl Delays {
    /// Starts again from the first delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.backoff.initial.min(self.backoff.max);
    }
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let b = self.backoff;
        let base = self.next;
        let jitter_cap = base.as_millis() * u128::from(b.jitter_percent) / 100;
        let jitter = fastrand::u64(0..=u64::try_from(jitter_cap).unwrap_or(u64::MAX));
        self.next = (base * b.growth_percent / 100).clamp(b.initial.min(b.max), b.max);
        Some(base + Duration::from_millis(jitter))
    }
}

/// How often, and how, one step is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    /// Retries after the first try.
    pub retries: u32,
}

impl RetryPolicy {
    /// The policy of every step of a job (`worker.stage_retries`).
    pub fn stage(settings: &Settings) -> RetryPolicy {
        RetryPolicy {
            backoff: Backoff::STAGE,
            retries: settings.worker.stage_retries,
        }
    }
}

/// Runs `op`, retrying transient failures ([`JobError::is_transient`]) as `policy` says;
/// each retry is counted in `metrics` under `what`.
pub async fn retrying<T, F, Fut>(
    policy: RetryPolicy,
    metrics: &Metrics,
    what: &'static str,
    mut op: F,
) -> Result<T, JobError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, JobError>>,
{
    let mut delays = policy.backoff.delays();
    let mut attempt = 0;
    loop {
        match op().await {
            Err(e) if e.is_transient() && attempt < policy.retries => {
                attempt += 1;
                metrics.retries.with_label_values(&[what]).inc();
                tracing::warn!(operation = what, attempt, error = %e, "transient failure; retrying");
                if let Some(delay) = delays.next() {
                    tokio::time::sleep(delay).await;
                }
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::AwsError;

    #[test]
    fn delays_grow_to_the_cap_with_bounded_jitter() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            growth_percent: 200,
            jitter_percent: 50,
        };
        let bases = [100, 200, 400, 500, 500];
        for (delay, base) in b.delays().zip(bases) {
            let ms = delay.as_millis();
            assert!((base..=base * 3 / 2).contains(&ms), "{ms} for {base}");
        }
        let mut d = b.delays();
        d.nth(3);
        d.reset();
        assert!(d.next().is_some_and(|ms| ms < Duration::from_millis(151)));
    }

    #[test]
    fn polling_grows_by_half_and_stops_at_the_configured_maximum() {
        let mut r = crate::config::Settings::for_tests().redshift;
        r.poll_initial_ms = 100;
        r.poll_max_ms = 200;
        let b = Backoff {
            jitter_percent: 0,
            ..Backoff::polling(&r)
        };
        let ms: Vec<u128> = b.delays().take(4).map(|d| d.as_millis()).collect();
        assert_eq!(ms, [100, 150, 200, 200]);
    }

    fn transient() -> JobError {
        JobError::Aws(AwsError::unanswered(
            "sqs",
            "ReceiveMessage",
            "connection reset",
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_as_often_as_the_policy_says() {
        let metrics = Metrics::new();
        let policy = RetryPolicy {
            backoff: Backoff::STAGE,
            retries: 2,
        };
        let mut calls = 0;
        let result: Result<(), JobError> = retrying(policy, &metrics, "test", || {
            calls += 1;
            async { Err(transient()) }
        })
        .await;
        assert!(result.is_err_and(|e| e.is_transient()));
        assert_eq!(calls, 3);
        assert_eq!(metrics.retries.with_label_values(&["test"]).get(), 2);

        let mut calls = 0;
        let result: Result<(), JobError> = retrying(policy, &metrics, "test", || {
            calls += 1;
            async { Err(JobError::Cancelled) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 1, "permanent failures are not retried");
    }
}
