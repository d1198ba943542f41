//! Running the UNLOAD through the Redshift Data API: ExecuteStatement with a deterministic
//! ClientToken, DescribeStatement polled with the polling backoff ([`Backoff::polling`]) from a
//! first delay learned from the statements before ([`FirstPoll`]), CancelStatement on timeout
//! or cancellation.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_redshiftdata::Client;
use aws_sdk_redshiftdata::types::StatusString;
use sha2::{Digest, Sha256};

use crate::aws::AwsResultExt;
use crate::config::RedshiftSettings;
use crate::error::JobError;
use crate::message::RequestId;
use crate::retry::Backoff;

/// The Data API's limit on StatementName.
const MAX_STATEMENT_NAME: usize = 500;
/// How often a running statement's request is read for a cancel (a GetItem each time).
pub const CANCEL_CHECK_EVERY: Duration = Duration::from_secs(2);

/// The longest pause after DescribeStatement calls that failed.
pub const MAX_UNANSWERED_PAUSE: Duration = Duration::from_secs(60);

/// A finished statement.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    /// ResultRows as reported (-1 when unknown).
    pub result_rows: i64,
}

/// The same request and attempt always produce the same token, so a retried or repeated
/// ExecuteStatement never starts a second UNLOAD.
pub fn client_token(request_id: &RequestId, attempt: u32) -> String {
    let digest =
        Sha256::digest(format!("redshift-export-worker\0{request_id}\0{attempt}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a statement in this status has ended (finished, failed or aborted).
fn has_ended(status: Option<&StatusString>) -> bool {
    matches!(
        status,
        Some(StatusString::Finished | StatusString::Failed | StatusString::Aborted)
    )
}

/// When to ask first whether a statement has ended: the delay by which about nine in ten of
/// this process's statements had ended, between `redshift.poll_initial_ms` and
/// `redshift.poll_max_ms`. A fixed first delay either asks too early for a workload's queries
/// (a second DescribeStatement for most of them, against a quota the whole fleet shares) or
/// makes short ones wait. It is a running estimate of that quantile: each statement that had
/// ended at its first poll takes it down by a hundredth, each that had not takes it up by nine
/// hundredths, so it settles where one in ten needs a second poll and follows the workload as
/// it changes.
#[derive(Debug)]
pub struct FirstPoll {
    /// The delay, in microseconds.
    micros: AtomicU64,
    min: u64,
    max: u64,
}

impl FirstPoll {
    /// The share of statements meant to have ended by the first poll.
    const ENDED: f64 = 0.9;
    /// How far one statement moves the delay, as a share of it (times 1 − [`Self::ENDED`]
    /// down, times [`Self::ENDED`] up).
    const STEP: f64 = 0.1;

    pub fn new(settings: &RedshiftSettings) -> FirstPoll {
        let min = settings.poll_initial_ms.saturating_mul(1000);
        FirstPoll {
            micros: AtomicU64::new(min),
            min,
            max: settings.poll_max_ms.saturating_mul(1000).max(min),
        }
    }

    /// The first delay for the next statement.
    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }

    /// Learns from one statement whether it had ended by its first poll.
    pub fn learn(&self, ended: bool) {
        let factor = if ended {
            1.0 - Self::STEP * (1.0 - Self::ENDED)
        } else {
            1.0 + Self::STEP * Self::ENDED
        };
        let (min, max) = (self.min, self.max);
        let _ = self
            .micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                Some(((now as f64 * factor) as u64).clamp(min, max))
            });
    }
}

#[derive(Clone, Debug)]
pub struct Redshift {
    client: Client,
    settings: RedshiftSettings,
    first_poll: Arc<FirstPoll>,
}

impl Redshift {
    pub fn new(client: Client, settings: RedshiftSettings) -> Self {
        Redshift {
            client,
            first_poll: Arc::new(FirstPoll::new(&settings)),
            settings,
        }
    }

    /// Submits the statement; returns its id.
    pub async fn execute(
        &self,
        sql: &str,
        request_id: &RequestId,
        attempt: u32,
    ) -> Result<String, JobError> {
        let s = &self.settings;
        let name: String = format!("redshift-export-worker:{request_id}:{attempt}")
            .chars()
            .take(MAX_STATEMENT_NAME)
            .collect();
        let out = self
            .client
            .execute_statement()
            .sql(sql)
            .database(&s.database)
            .set_cluster_identifier(s.cluster_identifier.clone())
            .set_workgroup_name(s.workgroup_name.clone())
            .set_secret_arn(s.secret_arn.clone())
            .set_db_user(s.db_user.clone())
            .statement_name(name)
            .client_token(client_token(request_id, attempt))
            .send()
            .await
            .aws("redshift-data", "ExecuteStatement")?;
        out.id.ok_or_else(|| {
            JobError::QueryFailed("ExecuteStatement returned no statement id".into())
        })
    }

    /// Polls until the statement is terminal, the first time after the learned first delay
    /// ([`FirstPoll`]: most statements are done by then, one DescribeStatement). `cancelled` is checked
    /// between polls, at most every [`CANCEL_CHECK_EVERY`]; when it returns true the
    /// statement is cancelled and [`JobError::Cancelled`] returned.
    pub async fn wait<F, Fut>(&self, id: &str, mut cancelled: F) -> Result<Finished, JobError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let s = &self.settings;
        let deadline = Instant::now() + Duration::from_secs(s.query_timeout_secs);
        let mut delays = Backoff {
            initial: self.first_poll.delay(),
            ..Backoff::polling(s)
        }
        .delays();
        let mut slower = Backoff::unanswered_polls(s).delays();
        let mut checked = Instant::now();
        // Until the first answer, from which the first delay learns.
        let mut first_answer = true;
        loop {
            if let Some(delay) = delays.next() {
                tokio::time::sleep(delay).await;
            }
            let described = self
                .client
                .describe_statement()
                .id(id)
                .send()
                .await
                .aws("redshift-data", "DescribeStatement");
            let d = match described {
                Ok(d) => {
                    slower.reset();
                    d
                }
                // Throttled (the account's DescribeStatement quota is shared by every replica)
                // or a passing failure, after the SDK's own retries: the statement runs on
                // regardless, so it is polled again, less often, until its deadline.
                Err(e) if e.transient && Instant::now() < deadline => {
                    let pause = slower.next().unwrap_or(MAX_UNANSWERED_PAUSE);
                    tracing::warn!(statement_id = id, error = %e, retry_in_ms = pause.as_millis() as u64, "DescribeStatement failed; polling again later");
                    tokio::time::sleep(pause).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if std::mem::take(&mut first_answer) {
                self.first_poll.learn(has_ended(d.status()));
            }
            match d.status() {
                Some(StatusString::Finished) => {
                    return Ok(Finished {
                        result_rows: d.result_rows(),
                    });
                }
                Some(StatusString::Failed) => {
                    let text = d.error().unwrap_or("no error text");
                    return Err(JobError::QueryFailed(
                        text.trim_start_matches("ERROR:").trim().to_string(),
                    ));
                }
                Some(StatusString::Aborted) => return Err(JobError::QueryAborted),
                _ => {}
            }
            if checked.elapsed() >= CANCEL_CHECK_EVERY {
                checked = Instant::now();
                if cancelled().await {
                    self.cancel(id).await;
                    return Err(JobError::Cancelled);
                }
            }
            if Instant::now() >= deadline {
                self.cancel(id).await;
                return Err(JobError::QueryTimeout(s.query_timeout_secs));
            }
        }
    }

    /// Whether the statement is still queued or running (true when that cannot be told: a
    /// statement is taken to run until it is seen to have ended).
    pub async fn is_running(&self, id: &str) -> bool {
        match self
            .client
            .describe_statement()
            .id(id)
            .send()
            .await
            .aws("redshift-data", "DescribeStatement")
        {
            Ok(d) => !has_ended(d.status()),
            Err(e) => {
                tracing::debug!(statement_id = id, error = %e, "the statement's status could not be read");
                true
            }
        }
    }

    /// Best-effort cancel: the statement may have finished meanwhile.
    pub async fn cancel(&self, id: &str) {
        match self
            .client
            .cancel_statement()
            .id(id)
            .send()
            .await
            .aws("redshift-data", "CancelStatement")
        {
            Ok(_) => tracing::info!(statement_id = id, "statement cancelled"),
            Err(e) => tracing::warn!(statement_id = id, error = %e, "cancel of statement failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_poll(initial_ms: u64, max_ms: u64) -> FirstPoll {
        let mut settings: RedshiftSettings = serde_json::from_value(serde_json::json!({
            "cluster_identifier": "c", "database": "d"
        }))
        .unwrap();
        settings.poll_initial_ms = initial_ms;
        settings.poll_max_ms = max_ms;
        FirstPoll::new(&settings)
    }

    #[test]
    fn the_first_poll_settles_where_nine_in_ten_statements_have_ended() {
        // Statements lasting 100–500 ms, evenly: nine in ten have ended by 460 ms.
        let first = first_poll(50, 5000);
        assert_eq!(
            first.delay(),
            Duration::from_millis(50),
            "it starts at the shortest"
        );
        let mut rng = fastrand::Rng::with_seed(7);
        let mut ended_at_first = 0;
        for i in 0..20_000 {
            let lasts = Duration::from_millis(rng.u64(100..=500));
            let ended = lasts <= first.delay();
            if i >= 10_000 && ended {
                ended_at_first += 1;
            }
            first.learn(ended);
        }
        let settled = first.delay().as_millis();
        assert!((420..=500).contains(&settled), "settled at {settled} ms");
        assert!(
            (8_600..=9_400).contains(&ended_at_first),
            "{ended_at_first} of 10,000 ended by the first poll"
        );
        // The workload gets quicker (10–50 ms): the delay follows it down to the shortest.
        for _ in 0..2_000 {
            first.learn(true);
        }
        assert_eq!(first.delay(), Duration::from_millis(50));
    }

    #[test]
    fn the_first_poll_never_leaves_its_bounds() {
        let first = first_poll(100, 1000);
        for _ in 0..500 {
            first.learn(false);
        }
        assert_eq!(first.delay(), Duration::from_millis(1000));
        for _ in 0..5_000 {
            first.learn(true);
        }
        assert_eq!(first.delay(), Duration::from_millis(100));
    }

    #[test]
    fn client_tokens_are_deterministic_distinct_and_short_enough() {
        let a = RequestId::parse("a").unwrap();
        let b = RequestId::parse("b").unwrap();
        assert_eq!(client_token(&a, 1), client_token(&a, 1));
        assert_ne!(client_token(&a, 1), client_token(&a, 2));
        assert_ne!(client_token(&a, 1), client_token(&b, 1));
        assert_eq!(
            client_token(&a, 1).len(),
            64,
            "the Data API allows 1–64 characters"
        );
    }
}
