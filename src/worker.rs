//! The receive loop: long-poll SQS, turn each message into a request (or dead-letter it),
//! run the job while a heartbeat keeps the message invisible, then delete, release or leave
//! the message according to the outcome. Stops receiving as soon as shutdown is signalled and
//! lets the job in hand finish.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::aws::AwsResultExt;
use crate::job::{self, Outcome, Services};
use crate::message;
use crate::state::LeaseOwner;

/// Runs until `shutdown` turns true, then waits for the jobs in flight (each has the grace
/// period before it releases its message).
pub async fn run(svc: Arc<Services>, mut shutdown: watch::Receiver<bool>) {
    let q = &svc.settings.queue;
    let slots = Arc::new(Semaphore::new(svc.settings.worker.max_concurrent_jobs));
    let mut jobs = JoinSet::new();
    let mut backoff = Duration::from_secs(1);
    tracing::info!(
        worker = svc.state.worker(),
        slots = svc.settings.worker.max_concurrent_jobs,
        "receiving export requests"
    );
    while !*shutdown.borrow() {
        // Reap finished jobs so the set does not grow.
        while jobs.try_join_next().is_some() {}
        // Receive only what can start now: wait for a free slot first.
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let mut permits = vec![first];
        while permits.len() < 10 {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let receive = svc
            .clients
            .sqs
            .receive_message()
            .queue_url(&q.url)
            .max_number_of_messages(permits.len() as i32)
            .wait_time_seconds(q.wait_secs as i32)
            .visibility_timeout(q.visibility_timeout_secs as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send();
        let received = tokio::select! {
            r = receive => r.aws("sqs", "ReceiveMessage"),
            _ = shutdown.changed() => break,
        };
        let messages = match received {
            Ok(out) => {
                backoff = Duration::from_secs(1);
                out.messages.unwrap_or_default()
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_secs = backoff.as_secs(), "receiving from the queue failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
                continue;
            }
        };
        // Each message takes one permit, released when its job ends; unused permits go back now.
        for (m, permit) in messages.into_iter().zip(permits.drain(..)) {
            let svc = svc.clone();
            let shutdown = shutdown.clone();
            jobs.spawn(async move {
                handle(&svc, m, shutdown).await;
                drop(permit);
            });
        }
    }
    tracing::info!(
        in_flight = jobs.len(),
        "stopped receiving; waiting for the jobs in flight"
    );
    while jobs.join_next().await.is_some() {}
    tracing::info!("all jobs finished or released");
}

async fn handle(
    svc: &Arc<Services>,
    m: aws_sdk_sqs::types::Message,
    mut shutdown: watch::Receiver<bool>,
) {
    let q = &svc.settings.queue;
    let (Some(receipt), Some(message_id)) = (m.receipt_handle.clone(), m.message_id.clone()) else {
        tracing::warn!("received a message without receipt handle or id");
        return;
    };
    let attribute = |name: MessageSystemAttributeName| {
        m.attributes
            .as_ref()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let receive_count =
        attribute(MessageSystemAttributeName::ApproximateReceiveCount).unwrap_or(1) as u32;
    svc.metrics.messages_received.inc();
    if let Some(sent_ms) = attribute(MessageSystemAttributeName::SentTimestamp) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        svc.metrics
            .observe_stage("queue_wait", now_ms.saturating_sub(sent_ms) as f64 / 1000.0);
    }
    let body = m.body.clone().unwrap_or_default();
    let started = Instant::now();
    let parsed = message::parse(
        body.as_bytes(),
        &message_id,
        q.max_message_bytes,
        &svc.settings.compat,
    );
    // The lease this job takes on its request: its own, never shared with another delivery.
    let owner = LeaseOwner::new_job(svc.state.worker());
    let leased = parsed
        .as_ref()
        .ok()
        .map(|r| (r.request_id.to_string(), owner.clone()));
    let mut heartbeat = tokio::spawn(heartbeat(svc.clone(), receipt.clone(), leased));
    svc.metrics.jobs_in_flight.inc();

    let outcome = match parsed {
        Ok(request) => {
            let span = tracing::info_span!("job", request_id = %request.request_id, statement_id = tracing::field::Empty);
            let grace = Duration::from_secs(svc.settings.worker.shutdown_grace_secs);
            let job = job::process(svc, &request, receive_count, &owner).instrument(span.clone());
            let outcome = tokio::select! {
                outcome = job => outcome,
                _ = &mut heartbeat => {
                    // The lease or the message was taken over: stop before any further side
                    // effect; the new owner carries on from the recorded state.
                    span.in_scope(|| tracing::warn!("lost the request's lease; stopping this job"));
                    Outcome::Yield
                }
                _ = async {
                    let _ = shutdown.wait_for(|stop| *stop).await;
                    tokio::time::sleep(grace).await;
                } => {
                    // Every step is recorded before it is taken, so dropping the job here loses
                    // nothing: the next worker resumes from the recorded state.
                    span.in_scope(|| tracing::warn!(grace_secs = grace.as_secs(), "shutdown grace period over; releasing the message"));
                    if let Err(e) = svc.state.release(request.request_id.as_str(), &owner).await {
                        span.in_scope(|| tracing::debug!(error = %e, "the lease was not released"));
                    }
                    Outcome::Retry(Duration::ZERO)
                }
            };
            svc.health.job_done(request.request_id.as_str());
            outcome
        }
        Err(e) if e.request_id.is_some() => {
            let span = tracing::info_span!("job", request_id = %e.request_id.clone().map(|r| r.to_string()).unwrap_or_default());
            async {
                tracing::warn!(error_code = e.code, error = %e.message, "invalid request");
                job::reject(svc, e, body.as_bytes()).await
            }
            .instrument(span)
            .await
        }
        Err(e) => {
            tracing::warn!(message_id, error_code = e.code, error = %e.message, "message has no usable request id");
            dead_letter(svc, &message_id, &body, e.code, &e.message).await
        }
    };
    let outcome = match outcome {
        Outcome::DeadLetter { code, reason } => {
            tracing::warn!(message_id, error_code = code, error = %reason, "message refused");
            dead_letter(svc, &message_id, &body, code, &reason).await
        }
        other => other,
    };
    heartbeat.abort();
    svc.metrics.jobs_in_flight.dec();
    let label = match outcome {
        Outcome::Finished(crate::state::Status::Completed) => Some("completed"),
        // Failures are counted with their error code where they are recorded.
        Outcome::Finished(_) => None,
        Outcome::Acknowledged(_) => Some("duplicate"),
        Outcome::Retry(_) => Some("retried"),
        Outcome::Yield => Some("yielded"),
        Outcome::DeadLetter { .. } => None,
    };
    if let Some(label) = label {
        svc.metrics.jobs.with_label_values(&[label, ""]).inc();
    }

    let sqs = &svc.clients.sqs;
    let result = match outcome {
        Outcome::Finished(status) | Outcome::Acknowledged(status) => {
            tracing::debug!(
                message_id,
                status = status.as_str(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "message done"
            );
            sqs.delete_message()
                .queue_url(&q.url)
                .receipt_handle(&receipt)
                .send()
                .await
                .aws("sqs", "DeleteMessage")
                .map(|_| ())
        }
        Outcome::Retry(delay) => sqs
            .change_message_visibility()
            .queue_url(&q.url)
            .receipt_handle(&receipt)
            .visibility_timeout(delay.as_secs().min(43_200) as i32)
            .send()
            .await
            .aws("sqs", "ChangeMessageVisibility")
            .map(|_| ()),
        Outcome::Yield | Outcome::DeadLetter { .. } => Ok(()),
    };
    if let Err(e) = result {
        // The message comes back when its visibility ends; the state makes that harmless.
        tracing::warn!(message_id, error = %e, "acknowledging the message failed");
    }
}

/// Keeps the message invisible and the request's lease alive while its job runs. Returns
/// only when the lease is lost (the receipt handle no longer works, or another worker holds
/// the request), which stops the job. Past SQS's 12-hour visibility cap the message comes
/// back, but the DynamoDB lease is still renewed, so a worker receiving it leaves it alone.
async fn heartbeat(svc: Arc<Services>, receipt: String, lease: Option<(String, LeaseOwner)>) {
    let q = &svc.settings.queue;
    let timeout = Duration::from_secs(u64::from(q.visibility_timeout_secs));
    let received = Instant::now();
    let mut capped = false;
    loop {
        tokio::time::sleep(timeout / 3).await;
        let left = Duration::from_secs(43_200).saturating_sub(received.elapsed());
        let extend = timeout.min(left);
        if extend.is_zero() && !capped {
            capped = true;
            tracing::warn!(
                "the message reached SQS's 12-hour visibility limit; the lease in DynamoDB keeps the request"
            );
        }
        if !capped {
            let result = svc
                .clients
                .sqs
                .change_message_visibility()
                .queue_url(&q.url)
                .receipt_handle(&receipt)
                .visibility_timeout(extend.as_secs() as i32)
                .send()
                .await
                .aws("sqs", "ChangeMessageVisibility");
            let label = if result.is_ok() { "ok" } else { "error" };
            svc.metrics
                .visibility_extensions
                .with_label_values(&[label])
                .inc();
            match result {
                Ok(_) => {}
                Err(e) if RECEIPT_GONE.iter().any(|code| e.code_is(code)) => {
                    tracing::warn!(error = %e, "the message's receipt handle is no longer valid");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "extending the message's visibility failed"),
            }
        }
        if let Some((rid, owner)) = &lease {
            match svc
                .state
                .renew(rid, owner, job::lease_duration(&svc.settings))
                .await
            {
                Ok(()) => {}
                Err(crate::error::JobError::Conflict(why)) => {
                    tracing::warn!(reason = %why, "the request's lease was lost");
                    return;
                }
                // Not yet leased (still being claimed) or a passing failure: try next beat.
                Err(e) => tracing::debug!(error = %e, "renewing the lease failed"),
            }
        }
    }
}

/// Error codes meaning the receipt handle no longer refers to our in-flight message
/// (the errors the SQS API gives ChangeMessageVisibility and DeleteMessage): the message
/// was deleted or delivered to someone else.
const RECEIPT_GONE: &[&str] = &[
    "ReceiptHandleIsInvalid",
    "InvalidParameterValue",
    "MessageNotInflight",
    "AWS.SimpleQueueService.MessageNotInflight",
];

/// SQS's limit on one message, body and attributes together.
const SQS_MAX_MESSAGE_BYTES: usize = 262_144;
/// Room kept for the attributes (names, types and values, the reason capped at 1 KiB).
const DEAD_LETTER_ATTRIBUTE_ROOM: usize = 2_048;

/// A message that cannot be processed (no usable request id, or one that names another
/// request): moved to the dead-letter queue at once, with the code and reason as message
/// attributes. A body too large to forward with its attributes is cut to fit, and says so
/// (`body_truncated_from`), so the forward can never fail for its size. Without a
/// dead-letter queue it is left for the queue's own redrive.
async fn dead_letter(
    svc: &Services,
    message_id: &str,
    body: &str,
    code: &'static str,
    reason: &str,
) -> Outcome {
    let retry = || {
        Outcome::Retry(Duration::from_secs(u64::from(
            svc.settings.worker.retry_delay_secs,
        )))
    };
    let Some(dlq) = &svc.settings.queue.dead_letter_url else {
        tracing::error!(
            message_id,
            "no dead-letter queue configured; leaving the message for the queue's redrive policy"
        );
        return retry();
    };
    let attr = |v: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
    };
    let room = SQS_MAX_MESSAGE_BYTES - DEAD_LETTER_ATTRIBUTE_ROOM;
    let (forwarded, truncated_from) = if body.len() > room {
        let mut end = room;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        (&body[..end], Some(body.len()))
    } else {
        (body, None)
    };
    // SQS refuses control characters in attributes; a hostile message can put them in the
    // reason (an unknown field's name), which would make the forward fail for ever.
    let reason: String = crate::error::redact(reason).chars().take(1024).collect();
    let (Ok(code_attr), Ok(reason_attr), Ok(source)) =
        (attr(code), attr(&reason), attr(message_id))
    else {
        return retry();
    };
    let mut send = svc
        .clients
        .sqs
        .send_message()
        .queue_url(dlq)
        .message_body(if forwarded.is_empty() { " " } else { forwarded })
        .message_attributes("error_code", code_attr)
        .message_attributes("error_message", reason_attr)
        .message_attributes("source_message_id", source);
    if let Some(size) = truncated_from
        && let Ok(a) = attr(&size.to_string())
    {
        send = send.message_attributes("body_truncated_from", a);
    }
    match send.send().await.aws("sqs", "SendMessage") {
        Ok(_) => {
            svc.metrics
                .messages_dead_lettered
                .with_label_values(&[code])
                .inc();
            Outcome::Finished(crate::state::Status::Failed)
        }
        Err(err) => {
            tracing::warn!(message_id, error = %err, "dead-lettering failed; the message will be retried");
            retry()
        }
    }
}
