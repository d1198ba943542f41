//! One delivery of one message: parse it, run its job under supervision while a heartbeat
//! keeps the message invisible, then delete, release or leave the message as the outcome says.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::dead_letter::dead_letter;
use super::heartbeat::{self, Ended};
use crate::aws::AwsResultExt;
use crate::job::{self, Outcome};
use crate::message::{self, ExportRequest};
use crate::services::Services;
use crate::shutdown::Shutdown;
use crate::state::{LeaseOwner, Status};

/// The longest visibility SQS accepts in ChangeMessageVisibility, in seconds.
const SQS_MAX_VISIBILITY_SECS: u64 = 43_200;
/// The longest DelaySeconds of SendMessage.
const SQS_MAX_DELAY_SECS: u64 = 900;
/// The message attribute that counts how often a message was put back on the queue for its
/// requester's fair share.
pub(super) const DEFERRALS: &str = "deferrals";

/// Handles one received message to the end.
pub(super) async fn handle(svc: Arc<Services>, m: Message, shutdown: Shutdown) {
    let (Some(receipt), Some(message_id)) = (m.receipt_handle.clone(), m.message_id.clone()) else {
        tracing::warn!("received a message without receipt handle or id");
        return;
    };
    let receive_count = system_attribute(&m, MessageSystemAttributeName::ApproximateReceiveCount)
        .and_then(|c| u32::try_from(c).ok())
        .unwrap_or(1);
    let deferrals = m
        .message_attributes
        .as_ref()
        .and_then(|a| a.get(DEFERRALS))
        .and_then(|v| v.string_value())
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0);
    svc.metrics.messages_received.inc();
    if let Some(sent_ms) = system_attribute(&m, MessageSystemAttributeName::SentTimestamp) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        svc.metrics
            .observe_stage("queue_wait", now_ms.saturating_sub(sent_ms) as f64 / 1000.0);
    }
    let body = m.body.unwrap_or_default();
    let started = Instant::now();
    let parsed = message::parse(
        body.as_bytes(),
        &message_id,
        svc.settings.queue.max_message_bytes,
        &svc.settings.compat,
    );
    let outcome = match parsed {
        Ok(request) => {
            let delivery = Delivery {
                svc: svc.clone(),
                request: Arc::new(request),
                owner: LeaseOwner::new_job(svc.state.worker()),
                receipt: receipt.clone(),
                receive_count,
                deferrals,
            };
            delivery.run(&shutdown).await
        }
        Err(e) if e.request_id.is_some() => {
            let in_flight = InFlight::start(&svc, None, shutdown.job_token());
            let beat = shutdown.spawn(heartbeat::run(
                svc.clone(),
                receipt.clone(),
                None,
                in_flight.token.clone(),
            ));
            let span = tracing::info_span!("job", request_id = %e.request_id.clone().map(|r| r.to_string()).unwrap_or_default());
            let outcome = async {
                tracing::warn!(error_code = e.code, error = %e.message, "invalid request");
                job::reject(&svc, e, body.as_bytes()).await
            }
            .instrument(span)
            .await;
            drop(in_flight);
            beat.abort();
            outcome
        }
        Err(e) => {
            tracing::warn!(message_id, error_code = e.code, error = %e.message, "message has no usable request id");
            dead_letter(&svc, &message_id, &body, e.code, &e.message).await
        }
    };
    let outcome = match outcome {
        Outcome::DeadLetter { code, reason } => {
            tracing::warn!(message_id, error_code = code, error = %reason, "message refused");
            dead_letter(&svc, &message_id, &body, code, &reason).await
        }
        other => other,
    };
    count(&svc, &outcome);
    tracing::debug!(
        message_id,
        outcome = ?outcome,
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "message done"
    );
    acknowledge(&svc, &receipt, &message_id, outcome, &body, deferrals).await;
}

fn system_attribute(m: &Message, name: MessageSystemAttributeName) -> Option<u64> {
    m.attributes
        .as_ref()
        .and_then(|a| a.get(&name))
        .and_then(|v| v.parse::<u64>().ok())
}

/// A valid request being worked on.
struct Delivery {
    svc: Arc<Services>,
    request: Arc<ExportRequest>,
    /// The lease this job takes on its request: its own, never shared with another delivery.
    owner: LeaseOwner,
    receipt: String,
    receive_count: u32,
    /// Times the message was put back on the queue for its requester's fair share.
    deferrals: u32,
}

impl Delivery {
    /// Runs the request's job to its outcome.
    async fn run(self, shutdown: &Shutdown) -> Outcome {
        let (svc, request, owner) = (self.svc.clone(), self.request.clone(), self.owner.clone());
        let (receive_count, deferrals) = (self.receive_count, self.deferrals);
        let job =
            async move { job::process(&svc, &request, receive_count, deferrals, &owner).await };
        self.supervise(shutdown, job).await
    }

    /// Runs `job` as a task of its own next to its heartbeat, and decides what ends it: the
    /// job's own outcome, a panic in it (recorded and released like a transient failure), the
    /// lease being lost, or the end of the shutdown grace period. Whatever ends it, the
    /// heartbeat stops and the job's entry in the gauge and in `/jobs` goes.
    async fn supervise<F>(self, shutdown: &Shutdown, job: F) -> Outcome
    where
        F: std::future::Future<Output = Outcome> + Send + 'static,
    {
        let svc = &self.svc;
        let rid = self.request.request_id.to_string();
        let in_flight = InFlight::start(svc, Some(rid.clone()), shutdown.job_token());
        let mut beat = shutdown.spawn(heartbeat::run(
            svc.clone(),
            self.receipt.clone(),
            Some(heartbeat::Held {
                request_id: rid.clone(),
                owner: self.owner.clone(),
                requested_by: self.request.requested_by.clone(),
            }),
            in_flight.token.clone(),
        ));
        let span =
            tracing::info_span!("job", request_id = %rid, statement_id = tracing::field::Empty);
        let job = shutdown.spawn(job.instrument(span.clone()));
        let abort = job.abort_handle();
        let grace = Duration::from_secs(svc.settings.worker.shutdown_grace_secs);
        let outcome = tokio::select! {
            joined = job => match joined {
                Ok(outcome) => outcome,
                Err(e) => {
                    let what = if e.is_panic() { "panicked" } else { "was cancelled" };
                    span.in_scope(|| tracing::error!(job = what, "the job {what}; releasing the message"));
                    svc.metrics.jobs.with_label_values(&["panicked", ""]).inc();
                    self.release(&span).await;
                    Outcome::Retry(Duration::from_secs(u64::from(svc.settings.worker.retry_delay_secs)))
                }
            },
            ended = &mut beat => {
                abort.abort();
                if ended.is_ok_and(|e| e == Ended::LeaseLost) {
                    // The new owner carries on from the recorded state.
                    span.in_scope(|| tracing::warn!("lost the request's lease; stopping this job"));
                }
                Outcome::Yield
            }
            () = async {
                shutdown.stopping().await;
                tokio::time::sleep(grace).await;
            } => {
                // Every step is recorded before it is taken, so stopping the job here loses
                // nothing: the next worker resumes from the recorded state.
                abort.abort();
                span.in_scope(|| tracing::warn!(grace_secs = grace.as_secs(), "shutdown grace period over; releasing the message"));
                self.release(&span).await;
                Outcome::Retry(Duration::ZERO)
            }
        };
        drop(in_flight);
        beat.abort();
        outcome
    }

    async fn release(&self, span: &tracing::Span) {
        if let Err(e) = self
            .svc
            .state
            .release(self.request.request_id.as_str(), &self.owner)
            .await
        {
            span.in_scope(|| tracing::debug!(error = %e, "the lease was not released"));
        }
    }
}

/// A job in flight: counted in the gauge and listed in `/jobs` from its start until it is
/// dropped — also when its task panicked — and its helpers' token cancelled then.
struct InFlight {
    svc: Arc<Services>,
    request_id: Option<String>,
    token: CancellationToken,
}

impl InFlight {
    fn start(svc: &Arc<Services>, request_id: Option<String>, token: CancellationToken) -> Self {
        svc.metrics.jobs_in_flight.inc();
        InFlight {
            svc: svc.clone(),
            request_id,
            token,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.token.cancel();
        self.svc.metrics.jobs_in_flight.dec();
        if let Some(rid) = &self.request_id {
            self.svc.health.job_done(rid);
        }
    }
}

/// Counts the delivery by outcome. Failures are counted with their error code where they
/// are recorded, dead-lettered messages where they are forwarded.
fn count(svc: &Services, outcome: &Outcome) {
    let label = match outcome {
        Outcome::Finished(Status::Completed) => "completed",
        Outcome::Acknowledged(_) => "duplicate",
        Outcome::Retry(_) => "retried",
        Outcome::Yield => "yielded",
        Outcome::Defer(_) => "deferred",
        Outcome::Finished(_) | Outcome::DeadLetter { .. } => return,
    };
    svc.metrics.jobs.with_label_values(&[label, ""]).inc();
}

/// Deletes the message of a finished request, makes a released one visible again after its
/// delay, or puts a deferred one back on the queue as a new message (`body`, with its
/// deferrals counted) and deletes this one. A failure here is harmless: the message comes back
/// when its visibility ends, and the recorded state makes the redelivery a no-op or a
/// resumption (a deferred message sent but not deleted is one delivery too many, no more).
async fn acknowledge(
    svc: &Services,
    receipt: &str,
    message_id: &str,
    outcome: Outcome,
    body: &str,
    deferrals: u32,
) {
    let sqs = &svc.clients.sqs;
    let url = &svc.settings.queue.url;
    let outcome = match outcome {
        // A FIFO queue takes no per-message delay: the message is released instead.
        Outcome::Defer(delay) if url.ends_with(".fifo") => Outcome::Retry(delay),
        Outcome::Defer(delay) => {
            // The count, for the history to note the first deferral only.
            let mark = aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("Number")
                .string_value((deferrals + 1).to_string())
                .build()
                .ok()
                .map(|v| [(DEFERRALS.to_string(), v)].into());
            let sent = sqs
                .send_message()
                .queue_url(url)
                .message_body(body)
                .delay_seconds(i32::try_from(delay.as_secs().min(SQS_MAX_DELAY_SECS)).unwrap_or(0))
                .set_message_attributes(mark)
                .send()
                .await
                .aws("sqs", "SendMessage");
            match sent {
                Ok(_) => Outcome::Finished(Status::Queued),
                Err(e) => {
                    tracing::warn!(message_id, error = %e, "the deferred message could not be sent again; releasing it instead");
                    Outcome::Retry(delay)
                }
            }
        }
        other => other,
    };
    let result = match outcome {
        Outcome::Finished(_) | Outcome::Acknowledged(_) => sqs
            .delete_message()
            .queue_url(url)
            .receipt_handle(receipt)
            .send()
            .await
            .aws("sqs", "DeleteMessage")
            .map(|_| ()),
        Outcome::Retry(delay) => sqs
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            .visibility_timeout(
                i32::try_from(delay.as_secs().min(SQS_MAX_VISIBILITY_SECS)).unwrap_or(i32::MAX),
            )
            .send()
            .await
            .aws("sqs", "ChangeMessageVisibility")
            .map(|_| ()),
        Outcome::Yield | Outcome::DeadLetter { .. } | Outcome::Defer(_) => Ok(()),
    };
    if let Err(e) = result {
        tracing::warn!(message_id, error = %e, "acknowledging the message failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Services whose AWS endpoints refuse connections at once: nothing leaves the host.
    async fn offline_services() -> Arc<Services> {
        let mut settings = crate::config::Settings::for_tests();
        let nowhere = Some("http://127.0.0.1:9".to_string());
        let e = &mut settings.aws.endpoints;
        (e.sqs, e.s3, e.dynamodb, e.sesv2, e.redshift_data) = (
            nowhere.clone(),
            nowhere.clone(),
            nowhere.clone(),
            nowhere.clone(),
            nowhere,
        );
        settings.aws.region = Some("us-east-1".into());
        match Services::new(settings).await {
            Ok(svc) => svc,
            Err(e) => panic!("services: {e}"),
        }
    }

    #[tokio::test]
    async fn a_job_that_panics_is_released_and_leaves_nothing_running() {
        let svc = offline_services().await;
        let shutdown = Shutdown::new();
        let request = match message::parse(
            br#"{"version":1,"request_id":"r-panics","query":"q"}"#,
            "m1",
            1024,
            &svc.settings.compat,
        ) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let delivery = Delivery {
            svc: svc.clone(),
            request: Arc::new(request),
            owner: LeaseOwner::new_job("w"),
            receipt: "receipt".into(),
            receive_count: 1,
            deferrals: 0,
        };
        let health = svc.clone();
        let job = async move {
            health.health.job_stage("r-panics", "querying");
            tokio::task::yield_now().await;
            panic!("a defect in a stage")
        };
        let outcome = delivery.supervise(&shutdown, job).await;
        assert_eq!(
            outcome,
            Outcome::Retry(Duration::from_secs(u64::from(
                svc.settings.worker.retry_delay_secs
            )))
        );
        assert_eq!(svc.metrics.jobs_in_flight.get(), 0);
        assert!(svc.health.jobs().is_empty(), "{:?}", svc.health.jobs());
        assert_eq!(
            svc.metrics.jobs.with_label_values(&["panicked", ""]).get(),
            1
        );
        // The heartbeat (and every other task of the job) has ended.
        assert!(shutdown.finish().await);
    }
}
