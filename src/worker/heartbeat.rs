//! Keeping a message invisible and its request's lease alive while the job runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::aws::AwsResultExt;
use crate::error::JobError;
use crate::job;
use crate::services::Services;
use crate::state::{LeaseOwner, STATEMENTS, requester_semaphore};

/// SQS's cap on how long a message can stay invisible after it was received.
const SQS_MAX_VISIBILITY: Duration = Duration::from_secs(43_200);

/// Beats per visibility timeout: a beat can fail twice before the message reappears.
const BEATS_PER_TIMEOUT: u32 = 3;

/// Why a heartbeat ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// The job ended (or the daemon exits): nothing to do.
    Stopped,
    /// The receipt handle no longer works or another job holds the request: the job must
    /// stop before any further side effect.
    LeaseLost,
}

/// What a job holds besides its message: its request's lease, and the fleet-wide slots that
/// go with it (the request's requester slot, when the fleet has fair shares).
pub(super) struct Held {
    pub request_id: String,
    pub owner: LeaseOwner,
    pub requested_by: Option<String>,
}

/// Beats until `stop` is cancelled or the lease is lost. Past SQS's 12-hour visibility cap
/// the message comes back, but the DynamoDB lease is still renewed, so a worker receiving it
/// leaves it alone.
pub(super) async fn run(
    svc: Arc<Services>,
    receipt: String,
    lease: Option<Held>,
    stop: CancellationToken,
) -> Ended {
    let timeout = Duration::from_secs(u64::from(svc.settings.queue.visibility_timeout_secs));
    let received = Instant::now();
    let mut capped = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(timeout / BEATS_PER_TIMEOUT) => {}
            () = stop.cancelled() => return Ended::Stopped,
        }
        let left = SQS_MAX_VISIBILITY.saturating_sub(received.elapsed());
        let extend = timeout.min(left);
        if extend.is_zero() && !capped {
            capped = true;
            tracing::warn!(
                "the message reached SQS's 12-hour visibility limit; the lease in DynamoDB keeps the request"
            );
        }
        if !capped && !extend_visibility(&svc, &receipt, extend).await {
            return Ended::LeaseLost;
        }
        if let Some(held) = &lease
            && !renew(&svc, held).await
        {
            return Ended::LeaseLost;
        }
    }
}

/// Extends the message's visibility; false when its receipt handle no longer works.
async fn extend_visibility(svc: &Services, receipt: &str, extend: Duration) -> bool {
    let result = svc
        .clients
        .sqs
        .change_message_visibility()
        .queue_url(&svc.settings.queue.url)
        .receipt_handle(receipt)
        .visibility_timeout(i32::try_from(extend.as_secs()).unwrap_or(i32::MAX))
        .send()
        .await
        .aws("sqs", "ChangeMessageVisibility");
    let label = if result.is_ok() { "ok" } else { "error" };
    svc.metrics
        .visibility_extensions
        .with_label_values(&[label])
        .inc();
    match result {
        Ok(_) => true,
        Err(e) if e.receipt_gone() => {
            tracing::warn!(error = %e, "the message's receipt handle is no longer valid");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "extending the message's visibility failed");
            true
        }
    }
}

/// Renews the job's lease and the fleet-wide slots it holds (statement, requester); false
/// when the lease was lost.
async fn renew(svc: &Services, held: &Held) -> bool {
    let (request_id, owner) = (held.request_id.as_str(), &held.owner);
    let lease = job::lease_duration(&svc.settings);
    if svc.settings.redshift.max_concurrent_statements > 0
        && let Err(e) = svc.state.renew_slot(STATEMENTS, request_id, lease).await
    {
        tracing::debug!(error = %e, "renewing the statement slot failed");
    }
    if svc.settings.worker.max_in_flight_per_requester > 0
        && let Some(by) = &held.requested_by
        && let Err(e) = svc
            .state
            .renew_slot(&requester_semaphore(by), request_id, lease)
            .await
    {
        tracing::debug!(error = %e, "renewing the requester slot failed");
    }
    match svc
        .state
        .renew(request_id, owner, job::lease_duration(&svc.settings))
        .await
    {
        Ok(()) => true,
        Err(JobError::Conflict(why)) => {
            tracing::warn!(reason = %why, "the request's lease was lost");
            false
        }
        // Not yet leased (still being claimed) or a passing failure: try next beat.
        Err(e) => {
            tracing::debug!(error = %e, "renewing the lease failed");
            true
        }
    }
}
