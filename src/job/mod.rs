//! One export through its stages — QUEUED → QUERYING → ARCHIVING → NOTIFYING → COMPLETED —
//! resumable from whatever state DynamoDB recorded: a redelivered message re-attaches to the
//! recorded statement, rebuilds the archive under the same key, and sends the email only if
//! its acceptance was not recorded. A terminal request is acknowledged without any work.

use std::time::Duration;

use crate::config::Settings;
use crate::error::JobError;
use crate::message::ExportRequest;
use crate::policy::{self, Audience};
use crate::retry::{retrying, step};
use crate::services::Services;
use crate::state::{LeaseOwner, Status};

mod failure;
mod fleet;
mod outbox;
mod stages;

use failure::after_error;
pub use failure::{fail, reject};
pub use fleet::give_statement_slot;
pub use outbox::deliver_due;
use stages::run_stages;

/// What to do with the message afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The request became terminal: delete the message.
    Finished(Status),
    /// The request was already terminal (a duplicate delivery): delete the message.
    Acknowledged(Status),
    /// A transient failure: release the message so it comes back after this delay.
    Retry(Duration),
    /// Another worker owns the request: leave the message alone.
    Yield,
    /// Its requester has as many requests in flight as it may: send the message again after
    /// this delay (a new message, so waiting uses none of the request's attempts) and delete
    /// this one.
    Defer(Duration),
    /// The message must not be processed (e.g. its request id names another request): move
    /// it to the dead-letter queue with this code and reason, and touch no request.
    DeadLetter { code: &'static str, reason: String },
}

/// How much shorter a lease is than the message's visibility timeout: when a worker dies,
/// whoever receives its message next must find the lease expired, despite clock skew between
/// the hosts and the time between receiving the message and reading the item.
const LEASE_MARGIN_SECS: u64 = 5;

/// How long a lease lasts unless renewed: a little less than the message's visibility, so
/// when a worker dies, whoever receives its message next finds the lease expired.
pub fn lease_duration(settings: &Settings) -> Duration {
    Duration::from_secs(
        u64::from(settings.queue.visibility_timeout_secs)
            .saturating_sub(LEASE_MARGIN_SECS)
            .max(1),
    )
}

/// Processes one delivery of a valid request; `owner` is this job's lease.
pub async fn process(
    svc: &Services,
    request: &ExportRequest,
    receive_count: u32,
    deferrals: u32,
    owner: &LeaseOwner,
) -> Outcome {
    let asked = request.fingerprinted();
    let item = retrying(svc.retry, &svc.metrics, step::CREATE_STATE, || {
        svc.state.create_or_load(
            &request.request_id,
            request.query_name(),
            request.requested_by.as_deref(),
            &asked,
            Some((owner, lease_duration(&svc.settings))),
        )
    })
    .await;
    let item = match item {
        Ok(item) => item,
        Err(e @ JobError::Unreadable(_)) => return unreadable(svc, receive_count, e),
        Err(e) => return after_error(svc, None, request, owner, &Audience::default(), e).await,
    };
    // Items written before fingerprints were recorded have none; they are taken as they are.
    if item
        .fingerprint
        .as_deref()
        .is_some_and(|f| f != asked.fingerprint)
    {
        return Outcome::DeadLetter {
            code: "request_id_conflict",
            reason: format!(
                "request id {} already names another request; this message asks for something else and was not processed",
                request.request_id
            ),
        };
    }
    if item.status.is_terminal() {
        tracing::info!(
            status = item.status.as_str(),
            "request already finished; acknowledging"
        );
        return outbox::acknowledge(svc, &item).await;
    }
    // A request leased by a live job elsewhere is left alone; one this job created (or
    // recognised as its own creation after a lost response) is leased to it already.
    let item = if item.lease_owner.as_deref() == Some(owner.as_str()) {
        item
    } else {
        let claimed = retrying(svc.retry, &svc.metrics, step::CLAIM, || {
            svc.state.claim(&item, owner, lease_duration(&svc.settings))
        })
        .await;
        match claimed {
            Ok(item) => item,
            Err(e) => {
                return after_error(svc, None, request, owner, &Audience::default(), e).await;
            }
        }
    };
    // Only recipients that pass the allow-list are ever mailed; when the request's own
    // recipients are refused, only the configured operators may be told.
    let recipients = policy::recipients(&svc.settings, request);
    let told = policy::audience(&svc.settings, Some(request));
    if receive_count > svc.settings.worker.max_attempts {
        let e = JobError::rejected(
            "attempts_exhausted",
            format!(
                "delivered {receive_count} times; the limit is {}",
                svc.settings.worker.max_attempts
            ),
        );
        return after_error(svc, Some(item), request, owner, &told, e).await;
    }
    let prepared = match recipients.and_then(|r| policy::prepare(&svc.settings, request, r)) {
        Ok(p) => p,
        Err(e) => return after_error(svc, Some(item), request, owner, &told, e).await,
    };
    if let Some(deferred) = fleet::take_requester_slot(svc, &item, request, owner, deferrals).await
    {
        return deferred;
    }
    let mut current = item.clone();
    let outcome = match run_stages(svc, request, &prepared, &mut current).await {
        Ok(status) => match outbox::deliver_due(svc, &current).await {
            Ok(()) => Outcome::Finished(status),
            Err(e) => outbox::retry_later(svc, e),
        },
        Err(e) => {
            let told = Audience {
                recipients: prepared.recipients,
                destinations: prepared.destinations,
            };
            after_error(svc, Some(current), request, owner, &told, e).await
        }
    };
    fleet::give_requester_slot(svc, request).await;
    outcome
}

/// The request's state item cannot be read by this version (a status or field written by a
/// newer version during a rolling upgrade, or by hand): the item is left as it is, and the
/// message comes back for a worker that can read it — until its attempts are used up, when
/// it goes to the dead-letter queue with the reason, for an operator to settle with `dlq`.
fn unreadable(svc: &Services, receive_count: u32, e: JobError) -> Outcome {
    let w = &svc.settings.worker;
    if receive_count > w.max_attempts {
        return Outcome::DeadLetter {
            code: e.code(),
            reason: format!(
                "{e}; delivered {receive_count} times, the limit is {}",
                w.max_attempts
            ),
        };
    }
    tracing::warn!(error = %e, "the request's state cannot be read; leaving the message for another worker");
    Outcome::Retry(Duration::from_secs(u64::from(w.retry_delay_secs)))
}
