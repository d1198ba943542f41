//! Completion events: when a request ends (COMPLETED, FAILED, CANCELLED) one JSON event
//! (`schema/event.json`) goes to each of its destinations — SQS queues, SNS topics, signed
//! HTTPS webhooks — named in the configuration, never by the request (docs/EVENTS.md).
//!
//! At-least-once: the terminal transition records the destinations still to be told
//! (`events_due`, the outbox); the job delivers, then removes them with a history event per
//! destination, and only then is the message deleted. A worker that dies in between leaves the
//! message to come back, and the redelivery finds the outbox and delivers again under the same
//! `event_id`, which receivers deduplicate on. A destination that still fails after
//! `events.max_attempts` is given up: the request stays as it ended, and the failure is in its
//! history, in `events_total{outcome="undelivered"}` and in an alert.

pub mod webhook;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::archive::ArchivedEntry;
use crate::aws::AwsError;
use crate::aws::Clients;
use crate::config::{Destination, EventsSettings};
use crate::metrics::Metrics;
use crate::retry::Backoff;
use crate::state::StateItem;
use webhook::Webhook;

/// The contract's version (`schema/event.json`).
pub const VERSION: u32 = 1;

/// One completion event, as `schema/event.json` describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionEvent {
    pub version: u32,
    /// The same for every delivery of this event: receivers deduplicate on it.
    pub event_id: String,
    pub request_id: String,
    /// COMPLETED, FAILED or CANCELLED.
    pub status: String,
    /// The UNLOAD attempt the request ended on.
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// What went wrong, in plain words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveRef>,
    /// A presigned GET of the archive (completed requests only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_expires_at: Option<String>,
    pub timings: Timings,
}

/// Where the archive is and how to check what was downloaded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArchiveRef {
    pub bucket: String,
    pub key: String,
    /// SHA-256 of the zip, lowercase hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub entries: Vec<ArchivedEntry>,
}

/// When the request was received and when it ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timings {
    pub created_at: String,
    pub finished_at: String,
    /// From received to ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_seconds: Option<f64>,
}

impl CompletionEvent {
    /// The event of a terminal `item`; `link` (URL and expiry) for a completed one.
    pub fn of(item: &StateItem, bucket: &str, link: Option<(String, String)>) -> CompletionEvent {
        let archive = item.archive_key.as_ref().map(|key| ArchiveRef {
            bucket: bucket.to_string(),
            key: key.clone(),
            sha256: item.archive_sha256.clone(),
            entries: item
                .archive_entries
                .as_deref()
                .and_then(|e| serde_json::from_str(e).ok())
                .unwrap_or_default(),
        });
        let total_seconds = match (
            humantime::parse_rfc3339(&item.created_at),
            humantime::parse_rfc3339(&item.updated_at),
        ) {
            (Ok(from), Ok(to)) => to.duration_since(from).ok().map(|d| d.as_secs_f64()),
            _ => None,
        };
        let (link, link_expires_at) = link.unzip();
        CompletionEvent {
            version: VERSION,
            event_id: event_id(item),
            request_id: item.request_id.clone(),
            status: item.status.as_str().to_string(),
            attempt: item.attempt,
            query: item.query.clone(),
            requested_by: item.requested_by.clone(),
            error_code: item.error_code.clone(),
            reason: item.error_message.clone(),
            rows: item.rows,
            archive_bytes: item.archive_bytes,
            archive,
            link,
            link_expires_at,
            timings: Timings {
                created_at: item.created_at.clone(),
                finished_at: item.updated_at.clone(),
                total_seconds,
            },
        }
    }
}

/// The id of the event of `item`'s terminal record: derived from the request and the record,
/// so every delivery of it, by any worker, carries the same id.
pub fn event_id(item: &StateItem) -> String {
    let hex = crate::message::hex_sha256(
        format!(
            "event\n{}\n{}\n{}",
            item.request_id,
            item.status.as_str(),
            item.version
        )
        .as_bytes(),
    );
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Why one delivery failed, classified where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub transient: bool,
    pub message: String,
}

impl Failure {
    pub fn transient(message: impl Into<String>) -> Failure {
        Failure {
            transient: true,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Failure {
        Failure {
            transient: false,
            message: message.into(),
        }
    }
}

impl From<AwsError> for Failure {
    fn from(e: AwsError) -> Failure {
        Failure {
            transient: e.transient,
            message: e.to_string(),
        }
    }
}

/// What became of the event at one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub destination: String,
    /// The last failure, when the event was given up.
    pub failed: Option<String>,
}

impl Delivery {
    /// The history event's detail.
    pub fn detail(&self) -> String {
        match &self.failed {
            None => format!("event sent to {}", self.destination),
            Some(why) => format!("event to {} not delivered: {why}", self.destination),
        }
    }
}

enum Target {
    Sqs { queue_url: String },
    Sns { topic_arn: String },
    Webhook(Webhook),
}

/// Delivers events to the configured destinations.
pub struct Publisher {
    targets: BTreeMap<String, Target>,
    sqs: aws_sdk_sqs::Client,
    sns: aws_sdk_sns::Client,
    timeout: Duration,
    max_attempts: u32,
    backoff: Backoff,
}

impl Publisher {
    /// Every configured destination, ready (webhook secrets read, certificates loaded).
    pub fn new(
        settings: &EventsSettings,
        clients: &Clients,
        metrics: &Metrics,
    ) -> Result<Publisher, String> {
        let mut targets = BTreeMap::new();
        for (name, d) in &settings.destinations {
            let target = match d {
                Destination::Sqs { queue_url } => Target::Sqs {
                    queue_url: queue_url.clone(),
                },
                Destination::Sns { topic_arn } => Target::Sns {
                    topic_arn: topic_arn.clone(),
                },
                Destination::Webhook {
                    url,
                    secret_env,
                    ca_file,
                } => Target::Webhook(
                    Webhook::new(url, secret_env, ca_file.as_deref())
                        .map_err(|e| format!("events.destinations.{name}: {e}"))?,
                ),
            };
            for outcome in ["sent", "retried", "undelivered"] {
                let _ = metrics.events.with_label_values(&[name.as_str(), outcome]);
            }
            targets.insert(name.clone(), target);
        }
        Ok(Publisher {
            targets,
            sqs: clients.sqs.clone(),
            sns: clients.sns.clone(),
            timeout: Duration::from_secs(settings.timeout_secs),
            max_attempts: settings.max_attempts,
            backoff: Backoff::EVENT,
        })
    }

    /// Delivers `event` to each of `destinations`, retrying transient failures up to
    /// `events.max_attempts` times; every destination ends sent or given up.
    pub async fn deliver(
        &self,
        event: &CompletionEvent,
        destinations: &[String],
        metrics: &Metrics,
    ) -> Vec<Delivery> {
        #[expect(
            clippy::expect_used,
            reason = "serialising strings, numbers and vectors of them cannot fail"
        )]
        let body = serde_json::to_vec(event).expect("an event serialises");
        let tries = destinations
            .iter()
            .map(|name| self.deliver_one(name, &body, event, metrics));
        futures_util::future::join_all(tries).await
    }

    async fn deliver_one(
        &self,
        name: &str,
        body: &[u8],
        event: &CompletionEvent,
        metrics: &Metrics,
    ) -> Delivery {
        let mut delays = self.backoff.delays();
        let mut attempt = 1;
        let failed = loop {
            let result = match self.targets.get(name) {
                Some(target) => self.send(target, body, event).await,
                // Named by a request accepted under an older configuration.
                None => Err(Failure::permanent("no such destination is configured")),
            };
            match result {
                Ok(()) => {
                    metrics.events.with_label_values(&[name, "sent"]).inc();
                    tracing::info!(destination = name, event_id = %event.event_id, "event sent");
                    break None;
                }
                Err(f) if f.transient && attempt < self.max_attempts => {
                    metrics.events.with_label_values(&[name, "retried"]).inc();
                    tracing::warn!(destination = name, error = %f.message, attempt, "event not delivered; retrying");
                    attempt += 1;
                    tokio::time::sleep(delays.next().unwrap_or(self.backoff.max)).await;
                }
                Err(f) => {
                    metrics
                        .events
                        .with_label_values(&[name, "undelivered"])
                        .inc();
                    metrics.events_undelivered.inc();
                    tracing::error!(destination = name, error = %f.message, attempts = attempt, "event given up as undelivered");
                    break Some(format!("{} (after {attempt} attempts)", f.message));
                }
            }
        };
        Delivery {
            destination: name.to_string(),
            failed,
        }
    }

    async fn send(
        &self,
        target: &Target,
        body: &[u8],
        event: &CompletionEvent,
    ) -> Result<(), Failure> {
        let text = String::from_utf8_lossy(body).into_owned();
        // FIFO queues and topics order by request and deduplicate by event.
        let fifo = |address: &str| {
            address
                .ends_with(".fifo")
                .then(|| (event.request_id.clone(), event.event_id.clone()))
        };
        match target {
            Target::Sqs { queue_url } => {
                let (group, dedup) = fifo(queue_url).unzip();
                let send = self
                    .sqs
                    .send_message()
                    .queue_url(queue_url)
                    .message_body(text)
                    .set_message_group_id(group)
                    .set_message_deduplication_id(dedup)
                    .send();
                self.within("SendMessage", async {
                    send.await
                        .map_err(|e| AwsError::from_sdk("sqs", "SendMessage", e))
                })
                .await
            }
            Target::Sns { topic_arn } => {
                let (group, dedup) = fifo(topic_arn).unzip();
                let publish = self
                    .sns
                    .publish()
                    .topic_arn(topic_arn)
                    .message(text)
                    .set_message_group_id(group)
                    .set_message_deduplication_id(dedup)
                    .send();
                self.within("Publish", async {
                    publish
                        .await
                        .map_err(|e| AwsError::from_sdk("sns", "Publish", e))
                })
                .await
            }
            Target::Webhook(hook) => hook.post(body, &event.event_id, self.timeout).await,
        }
    }

    /// One AWS call within `events.timeout_secs`.
    async fn within<T>(
        &self,
        operation: &str,
        call: impl Future<Output = Result<T, AwsError>>,
    ) -> Result<(), Failure> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(Failure::transient(format!(
                "{operation} took longer than {} s",
                self.timeout.as_secs()
            ))),
        }
    }
}
