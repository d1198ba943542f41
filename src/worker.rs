//! The receive loop: long-poll SQS, turn each message into a request (or dead-letter it),
//! run the job while a heartbeat keeps the message invisible, then delete, release or leave
//! the message according to the outcome. Stops receiving as soon as shutdown is signalled and
//! lets the job in hand finish.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName};
use tokio::sync::watch;
use tracing::Instrument;

use crate::aws::AwsResultExt;
use crate::job::{self, Outcome, Services};
use crate::message::{self, MessageError};

/// Runs until `shutdown` turns true.
pub async fn run(svc: Arc<Services>, mut shutdown: watch::Receiver<bool>) {
    let q = &svc.settings.queue;
    let mut backoff = Duration::from_secs(1);
    tracing::info!(worker = svc.state.worker(), "receiving export requests");
    while !*shutdown.borrow() {
        let receive = svc
            .clients
            .sqs
            .receive_message()
            .queue_url(&q.url)
            .max_number_of_messages(1)
            .wait_time_seconds(q.wait_secs as i32)
            .visibility_timeout(q.visibility_timeout_secs as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
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
        for m in messages {
            handle(&svc, m).await;
        }
    }
    tracing::info!("stopped receiving");
}

async fn handle(svc: &Arc<Services>, m: aws_sdk_sqs::types::Message) {
    let q = &svc.settings.queue;
    let (Some(receipt), Some(message_id)) = (m.receipt_handle.clone(), m.message_id.clone()) else {
        tracing::warn!("received a message without receipt handle or id");
        return;
    };
    let receive_count: u32 = m
        .attributes
        .as_ref()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let body = m.body.clone().unwrap_or_default();
    let started = Instant::now();
    let heartbeat = tokio::spawn(heartbeat(svc.clone(), receipt.clone()));

    let outcome = match message::parse(
        body.as_bytes(),
        &message_id,
        q.max_message_bytes,
        &svc.settings.compat,
    ) {
        Ok(request) => {
            let span = tracing::info_span!("job", request_id = %request.request_id, statement_id = tracing::field::Empty);
            job::process(svc, &request, receive_count)
                .instrument(span)
                .await
        }
        Err(e) if e.request_id.is_some() => {
            let span = tracing::info_span!("job", request_id = %e.request_id.clone().map(|r| r.to_string()).unwrap_or_default());
            async {
                tracing::warn!(error_code = e.code, error = %e.message, "invalid request");
                job::reject(svc, e).await
            }
            .instrument(span)
            .await
        }
        Err(e) => dead_letter(svc, &message_id, &body, &e).await,
    };
    heartbeat.abort();

    let sqs = &svc.clients.sqs;
    let result = match outcome {
        Outcome::Finished(status) => {
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
        Outcome::Yield => Ok(()),
    };
    if let Err(e) = result {
        // The message comes back when its visibility ends; the state makes that harmless.
        tracing::warn!(message_id, error = %e, "acknowledging the message failed");
    }
}

/// Keeps the message invisible while its job runs, within SQS's 12-hour cap.
async fn heartbeat(svc: Arc<Services>, receipt: String) {
    let q = &svc.settings.queue;
    let timeout = Duration::from_secs(u64::from(q.visibility_timeout_secs));
    let received = Instant::now();
    loop {
        tokio::time::sleep(timeout / 3).await;
        let left = Duration::from_secs(43_200).saturating_sub(received.elapsed());
        let extend = timeout.min(left);
        if extend.is_zero() {
            tracing::warn!(
                "the message reached SQS's 12-hour visibility limit; it will be redelivered"
            );
            return;
        }
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
        if let Err(e) = result {
            tracing::warn!(error = %e, "extending the message's visibility failed");
        }
    }
}

/// A message from which no request id can be read: moved to the dead-letter queue at once,
/// with the reason attached. Without a dead-letter queue it is left for SQS's own redrive.
async fn dead_letter(svc: &Services, message_id: &str, body: &str, e: &MessageError) -> Outcome {
    tracing::warn!(message_id, error_code = e.code, error = %e.message, "message has no usable request id");
    let Some(dlq) = &svc.settings.queue.dead_letter_url else {
        tracing::error!(
            message_id,
            "no dead-letter queue configured; leaving the message for the queue's redrive policy"
        );
        return Outcome::Retry(Duration::from_secs(u64::from(
            svc.settings.worker.retry_delay_secs,
        )));
    };
    let attr = |v: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
    };
    let (Ok(code), Ok(reason), Ok(source)) = (
        attr(e.code),
        attr(&e.message.chars().take(1024).collect::<String>()),
        attr(message_id),
    ) else {
        return Outcome::Retry(Duration::from_secs(u64::from(
            svc.settings.worker.retry_delay_secs,
        )));
    };
    let sent = svc
        .clients
        .sqs
        .send_message()
        .queue_url(dlq)
        .message_body(if body.is_empty() { " " } else { body })
        .message_attributes("error_code", code)
        .message_attributes("error_message", reason)
        .message_attributes("source_message_id", source)
        .send()
        .await
        .aws("sqs", "SendMessage");
    match sent {
        Ok(_) => Outcome::Finished(crate::state::Status::Failed),
        Err(err) => {
            tracing::warn!(message_id, error = %err, "dead-lettering failed; the message will be retried");
            Outcome::Retry(Duration::from_secs(u64::from(
                svc.settings.worker.retry_delay_secs,
            )))
        }
    }
}
