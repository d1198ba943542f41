//! What a failure means for a request and its message: transient failures release the
//! message (the lease too, so a redelivery can start at once); permanent ones record FAILED
//! (or CANCELLED) with the error's code, tell the allow-listed recipients when configured and
//! clean up the attempt's unloaded files; a message that is not a valid request fails the
//! request it names only if it created it.

use std::time::Duration;

use super::Outcome;
use super::stages::advance;
use crate::error::JobError;
use crate::message::{ExportRequest, Fingerprinted, MessageError, RequestId};
use crate::notify::templates::FailureContext;
use crate::policy::{Audience, default_destinations};
use crate::retry::{retrying, step};
use crate::services::Services;
use crate::state::{LeaseOwner, StateItem, Status};
use crate::unload;

/// Decides what an error means for the request and the message. The audience's recipients
/// passed the allow-list (or are the configured operators).
pub(super) async fn after_error(
    svc: &Services,
    item: Option<StateItem>,
    request: &ExportRequest,
    owner: &LeaseOwner,
    audience: &Audience,
    e: JobError,
) -> Outcome {
    match &e {
        JobError::Conflict(why) => {
            tracing::info!(reason = %why, "another worker changed the request; leaving it");
            return Outcome::Yield;
        }
        // Checked again when the message comes back, against its attempts (`unreadable`).
        e if e.is_transient() || matches!(e, JobError::Unreadable(_)) => {
            let delay = Duration::from_secs(u64::from(svc.settings.worker.retry_delay_secs));
            tracing::warn!(error = %e, retry_in_secs = delay.as_secs(), "transient failure; the message will be retried");
            // Whoever receives the message next may take the request at once.
            if let Err(release_error) = svc.state.release(request.request_id.as_str(), owner).await
            {
                tracing::debug!(error = %release_error, "the lease was not released");
            }
            return Outcome::Retry(delay);
        }
        _ => {}
    }
    let Some(item) = item else {
        tracing::error!(error = %e, "failure before the request could be recorded; the message will be retried");
        return Outcome::Retry(Duration::from_secs(u64::from(
            svc.settings.worker.retry_delay_secs,
        )));
    };
    fail(
        svc,
        item,
        &request.request_id,
        request.query_name(),
        audience,
        e,
    )
    .await
}

/// Records FAILED (or CANCELLED) with the error's code, tells the event destinations and, if
/// configured, the recipients.
pub async fn fail(
    svc: &Services,
    item: StateItem,
    request_id: &RequestId,
    query: &str,
    audience: &Audience,
    e: JobError,
) -> Outcome {
    let recipients = audience.recipients.as_slice();
    let to = if matches!(e, JobError::Cancelled) {
        Status::Cancelled
    } else {
        Status::Failed
    };
    tracing::warn!(error_code = e.code(), error = %e, "export failed");
    let (code, message) = (
        e.code().to_string(),
        // Outside text (field names of a hostile message, a mail server's reply) is made
        // safe to store and to print in `status`.
        crate::error::redact(&e.to_string()),
    );
    let destinations = audience.destinations.clone();
    let changes = move |next: &mut StateItem| {
        next.error_code = Some(code.clone());
        next.error_message = Some(message.clone());
        next.events_due = destinations.clone();
    };
    let recorded = advance(svc, &item, to, &changes, e.code()).await;
    let recorded = match recorded {
        Ok(recorded) => {
            // Counted once, when recorded: a retried record must not count twice.
            let outcome = if to == Status::Cancelled {
                "cancelled"
            } else {
                "failed"
            };
            svc.metrics
                .jobs
                .with_label_values(&[outcome, e.code()])
                .inc();
            if to == Status::Failed {
                svc.metrics.failures.inc();
            }
            recorded
        }
        Err(JobError::Conflict(_)) => return Outcome::Yield,
        Err(record_error) => {
            tracing::error!(error = %record_error, "the failure could not be recorded; the message will be retried");
            return Outcome::Retry(Duration::from_secs(u64::from(
                svc.settings.worker.retry_delay_secs,
            )));
        }
    };
    if svc.settings.email.notify_on_failure && !recipients.is_empty() {
        let rendered = svc.templates.failure(&FailureContext {
            request_id: request_id.as_str(),
            query,
            error_code: e.code(),
            reason: e.plain_words(),
        });
        match rendered {
            Ok(rendered) => {
                let id = format!(
                    "{request_id}.{}.{}",
                    item.attempt,
                    to.as_str().to_ascii_lowercase()
                );
                if let Err(mail_error) = svc.mailer.send(recipients, &rendered, &id).await {
                    tracing::warn!(error = %mail_error, "failure email not sent");
                }
            }
            Err(template_error) => {
                tracing::warn!(error = %template_error, "failure email not rendered")
            }
        }
    }
    super::fleet::give_statement_slot(svc, request_id.as_str()).await;
    if item.attempt > 0 {
        let prefix = unload::attempt_prefix(&svc.settings.upload.prefix, request_id, item.attempt);
        if let Err(cleanup_error) = svc.archiver.delete_unloaded(&prefix).await {
            tracing::warn!(error = %cleanup_error, "unloaded files of the failed request could not be deleted");
        }
    }
    match super::outbox::deliver_due(svc, &recorded).await {
        Ok(()) => Outcome::Finished(to),
        Err(e) => super::outbox::retry_later(svc, e),
    }
}

/// A message that names a request id but is not a valid request: record it FAILED — unless
/// the id already names a request this message did not create, which is left untouched (the
/// message goes to the dead-letter queue with its reason instead).
pub async fn reject(svc: &Services, error: MessageError, body: &[u8]) -> Outcome {
    let Some(request_id) = error.request_id.clone() else {
        return Outcome::Retry(Duration::from_secs(u64::from(
            svc.settings.worker.retry_delay_secs,
        )));
    };
    let asked = Fingerprinted::of_invalid(body);
    let item = retrying(svc.retry, &svc.metrics, step::CREATE_STATE, || {
        svc.state
            .create_or_load(&request_id, "invalid", None, &asked, None)
    })
    .await;
    match item {
        Ok(item) if item.fingerprint.as_deref() != Some(asked.fingerprint.as_str()) => {
            Outcome::DeadLetter {
                code: error.code,
                reason: format!(
                    "{}; request id {request_id} names another request, which was left unchanged",
                    error.message
                ),
            }
        }
        Ok(item) if item.status.is_terminal() => super::outbox::acknowledge(svc, &item).await,
        Ok(item) => {
            // Nobody is mailed about a message that is not a request; the default event
            // destinations (an upstream system's reply queue) are told.
            let audience = Audience {
                recipients: Vec::new(),
                destinations: default_destinations(&svc.settings),
            };
            fail(
                svc,
                item,
                &request_id,
                "invalid",
                &audience,
                JobError::Message(error),
            )
            .await
        }
        Err(JobError::Conflict(_)) => Outcome::Yield,
        Err(e) => {
            tracing::warn!(error = %e, "the invalid request could not be recorded; the message will be retried");
            Outcome::Retry(Duration::from_secs(u64::from(
                svc.settings.worker.retry_delay_secs,
            )))
        }
    }
}
