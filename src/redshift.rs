//! Running the UNLOAD through the Redshift Data API: ExecuteStatement with a deterministic
//! ClientToken, DescribeStatement polled with the polling backoff ([`Backoff::polling`]),
//! CancelStatement on timeout or cancellation.

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

#[derive(Clone, Debug)]
pub struct Redshift {
    client: Client,
    settings: RedshiftSettings,
}

impl Redshift {
    pub fn new(client: Client, settings: RedshiftSettings) -> Self {
        Redshift { client, settings }
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

    /// Polls until the statement is terminal, the first time after the first polling delay
    /// (short queries are done by then: one DescribeStatement). `cancelled` is checked
    /// between polls, at most every [`CANCEL_CHECK_EVERY`]; when it returns true the
    /// statement is cancelled and [`JobError::Cancelled`] returned.
    pub async fn wait<F, Fut>(&self, id: &str, mut cancelled: F) -> Result<Finished, JobError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let s = &self.settings;
        let deadline = Instant::now() + Duration::from_secs(s.query_timeout_secs);
        let mut delays = Backoff::polling(s).delays();
        let mut slower = Backoff::unanswered_polls(s).delays();
        let mut checked = Instant::now();
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
            Ok(d) => !matches!(
                d.status(),
                Some(StatusString::Finished | StatusString::Failed | StatusString::Aborted)
            ),
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
