//! The events a request owes once it has ended: delivered after the terminal transition
//! recorded which destinations are due (`events_due`), then cleared with a history event per
//! destination. The message is deleted only after that, so a worker that dies in between
//! leaves the message to come back and the next delivery sends the events again
//! ([`acknowledge`]) — at-least-once, under one `event_id` (docs/EVENTS.md).

use std::time::Duration;

use super::Outcome;
use crate::error::JobError;
use crate::events::CompletionEvent;
use crate::presign;
use crate::retry::{retrying, step};
use crate::services::Services;
use crate::state::{StateItem, Status, timestamp};

/// Delivers the events `item` owes, if any, and records what became of each. An error means
/// the record could not be written: the message must come back so they are sent again.
pub async fn deliver_due(svc: &Services, item: &StateItem) -> Result<(), JobError> {
    if item.events_due.is_empty() {
        return Ok(());
    }
    let link = if item.status == Status::Completed {
        link(svc, item).await?
    } else {
        None
    };
    let event = CompletionEvent::of(item, &svc.settings.archive.bucket, link);
    let deliveries = svc
        .publisher
        .deliver(&event, &item.events_due, &svc.metrics)
        .await;
    let details: Vec<String> = deliveries.iter().map(|d| d.detail()).collect();
    retrying(svc.retry, &svc.metrics, step::RECORD_TRANSITION, || {
        svc.state.events_told(item, &details)
    })
    .await
}

/// A fresh link to a completed request's archive, for its event.
async fn link(svc: &Services, item: &StateItem) -> Result<Option<(String, String)>, JobError> {
    let Some(key) = &item.archive_key else {
        return Ok(None);
    };
    let link = presign::archive_link(svc, key, &item.request_id).await?;
    Ok(Some((link.url, timestamp(link.expires_at))))
}

/// A delivery of a request that had already ended: the events it still owes are sent (a
/// worker died between recording the end and telling the destinations), then the message
/// can go.
pub(super) async fn acknowledge(svc: &Services, item: &StateItem) -> Outcome {
    if !item.events_due.is_empty() {
        tracing::info!(
            destinations = item.events_due.len(),
            "request already finished; sending the events it still owes"
        );
    }
    match deliver_due(svc, item).await {
        Ok(()) => Outcome::Acknowledged(item.status),
        Err(e) => retry_later(svc, e),
    }
}

/// The events' outcome could not be recorded: the message comes back and they are sent again.
pub(super) fn retry_later(svc: &Services, e: JobError) -> Outcome {
    tracing::warn!(error = %e, "the events' delivery could not be recorded; the message will be retried");
    Outcome::Retry(Duration::from_secs(u64::from(
        svc.settings.worker.retry_delay_secs,
    )))
}
