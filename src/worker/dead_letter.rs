//! Moving a message that must not be processed to the dead-letter queue, with its reason.

use std::time::Duration;

use aws_sdk_sqs::types::MessageAttributeValue;

use crate::aws::AwsResultExt;
use crate::job::Outcome;
use crate::services::Services;

/// SQS's limit on one message, body and attributes together.
const SQS_MAX_MESSAGE_BYTES: usize = 262_144;
/// Longest reason attached: enough for any of the worker's own reasons, with room for a
/// quoted field name.
const MAX_REASON_BYTES: usize = 1_024;
/// Room kept for the attributes (names, types and values, the reason capped at
/// [`MAX_REASON_BYTES`]).
const DEAD_LETTER_ATTRIBUTE_ROOM: usize = 2_048;

/// A message that cannot be processed (no usable request id, or one that names another
/// request): moved to the dead-letter queue at once, with the code and reason as message
/// attributes. A body too large to forward with its attributes is cut to fit, and says so
/// (`body_truncated_from`), so the forward can never fail for its size. Without a
/// dead-letter queue it is left for the queue's own redrive.
pub(super) async fn dead_letter(
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
    let mut reason = crate::error::redact(reason);
    let mut end = reason.len().min(MAX_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.truncate(end);
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
