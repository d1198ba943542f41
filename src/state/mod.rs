//! Request state in DynamoDB: one `state` item per request and one
//! `event#<timestamp>#<version>` item per transition. Every transition is a single
//! transaction that checks the state item's version, so two workers can never both advance
//! the same request. Leases and cancellation flags live in [`lease`].

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};

use crate::aws::{AwsError, AwsResultExt};
use crate::error::JobError;
use crate::message::{Fingerprinted, RequestId};

mod lease;
mod open;

pub use lease::LeaseOwner;
pub use open::{OPEN_INDEX, OPEN_SHARDS};

/// Lifecycle of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Queued,
    Querying,
    Archiving,
    Notifying,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "QUEUED",
            Status::Querying => "QUERYING",
            Status::Archiving => "ARCHIVING",
            Status::Notifying => "NOTIFYING",
            Status::Completed => "COMPLETED",
            Status::Failed => "FAILED",
            Status::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        [
            Status::Queued,
            Status::Querying,
            Status::Archiving,
            Status::Notifying,
            Status::Completed,
            Status::Failed,
            Status::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }
}

/// The `state` item.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StateItem {
    pub request_id: String,
    #[serde(serialize_with = "status_str")]
    pub status: Status,
    pub attempt: u32,
    pub statement_id: Option<String>,
    pub query: Option<String>,
    pub requested_by: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub rows: Option<u64>,
    pub archive_bytes: Option<u64>,
    pub archive_key: Option<String>,
    pub url_expires_at: Option<String>,
    pub notified_at: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// What was asked, in canonical form (empty for a message that was not a valid request).
    pub request: Option<String>,
    /// SHA-256 of `request` (or of an invalid message's body): a message with the same
    /// request id and another fingerprint is not a redelivery and must not touch the item.
    pub fingerprint: Option<String>,
    /// How often the sweeper sent the request again because its message had gone.
    pub redrives: u32,
    /// Set by `cancel`; the worker stops at its next check and records CANCELLED.
    pub cancel_requested: bool,
    /// The job working on the request (worker id and a per-job token), and until when (epoch
    /// seconds) unless it renews.
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<u64>,
    pub version: u64,
}

fn status_str<S: serde::Serializer>(s: &Status, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

/// One history event.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Event {
    pub at: String,
    pub from: String,
    pub to: String,
    pub worker: String,
    pub detail: String,
}

/// Attributes a transition sets besides status, version and updated_at.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    pub attempt: Option<u32>,
    pub statement_id: Option<String>,
    pub rows: Option<u64>,
    pub archive_bytes: Option<u64>,
    pub archive_key: Option<String>,
    pub url_expires_at: Option<String>,
    pub notified_at: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 3339 UTC with microseconds: fixed width, so it sorts as time.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// Access to the table.
#[derive(Clone, Debug)]
pub struct StateStore {
    client: Client,
    table: String,
    ttl: Duration,
    worker: String,
}

const STATE_SK: &str = "state";

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

impl StateStore {
    pub fn new(client: Client, table: String, ttl_days: u32, worker: String) -> Self {
        StateStore {
            client,
            table,
            ttl: Duration::from_secs(u64::from(ttl_days) * 86_400),
            worker,
        }
    }

    pub fn worker(&self) -> &str {
        &self.worker
    }

    fn expires_at(&self, now: SystemTime) -> AttributeValue {
        n((now + self.ttl)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0))
    }

    fn event_put(
        &self,
        request_id: &str,
        version: u64,
        from: &str,
        to: Status,
        detail: &str,
        now: SystemTime,
    ) -> Put {
        let at = timestamp(now);
        let item = HashMap::from([
            ("request_id".to_string(), s(request_id)),
            ("sk".to_string(), s(format!("event#{at}#{version:06}"))),
            ("from".to_string(), s(from)),
            ("to".to_string(), s(to.as_str())),
            ("at".to_string(), s(at)),
            ("worker".to_string(), s(&self.worker)),
            ("detail".to_string(), s(detail)),
            ("expires_at".to_string(), self.expires_at(now)),
        ]);
        // Infallible: table name and item are set.
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(request_id)")
            .build()
            .unwrap_or_else(|_| unreachable!("table and item are set"))
    }

    /// Creates the request in QUEUED, or returns the existing item when it is already known
    /// (whatever its fingerprint: the caller compares them).
    pub async fn create_or_load(
        &self,
        request_id: &RequestId,
        query: &str,
        requested_by: Option<&str>,
        asked: &Fingerprinted,
    ) -> Result<StateItem, JobError> {
        let now = SystemTime::now();
        let at = timestamp(now);
        let mut item = HashMap::from([
            ("request_id".to_string(), s(request_id.as_str())),
            ("sk".to_string(), s(STATE_SK)),
            ("status".to_string(), s(Status::Queued.as_str())),
            ("attempt".to_string(), n(0)),
            ("query".to_string(), s(query)),
            ("created_at".to_string(), s(&at)),
            ("updated_at".to_string(), s(&at)),
            ("version".to_string(), n(1)),
            ("expires_at".to_string(), self.expires_at(now)),
            ("fingerprint".to_string(), s(&asked.fingerprint)),
            (
                open::OPEN_SHARD.to_string(),
                s(open::shard_of(request_id.as_str())),
            ),
        ]);
        if !asked.canonical.is_empty() {
            item.insert("request".into(), s(&asked.canonical));
        }
        if let Some(by) = requested_by {
            item.insert("requested_by".into(), s(by));
        }
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(request_id)")
            .build()
            .unwrap_or_else(|_| unreachable!("table and item are set"));
        let event = self.event_put(
            request_id.as_str(),
            1,
            "",
            Status::Queued,
            "request received",
            now,
        );
        // A failed condition means the request exists already: it is loaded below.
        // Per call (the timestamp is part of the item): the SDK's retries of this call share
        // it, another worker's create of the same request does not.
        let token = idempotency_token(&[request_id.as_str(), "create", &asked.fingerprint, &at]);
        self.write_with_event(TransactWriteItem::builder().put(put).build(), event, token)
            .await?;
        self.load(request_id.as_str()).await?.ok_or_else(|| {
            JobError::Conflict("state item vanished right after it was written".into())
        })
    }

    /// Moves `current` to `to` with `changes`, if nobody changed it since it was read.
    pub async fn transition(
        &self,
        current: &StateItem,
        to: Status,
        changes: Changes,
        detail: &str,
    ) -> Result<StateItem, JobError> {
        let now = SystemTime::now();
        let at = timestamp(now);
        let next_version = current.version + 1;
        let mut names = HashMap::from([
            ("#status".to_string(), "status".to_string()),
            ("#version".to_string(), "version".to_string()),
            ("#updated_at".to_string(), "updated_at".to_string()),
        ]);
        let mut values = HashMap::from([
            (":status".to_string(), s(to.as_str())),
            (":version".to_string(), n(next_version)),
            (":expected".to_string(), n(current.version)),
            (":updated_at".to_string(), s(&at)),
        ]);
        let mut sets = vec![
            "#status = :status",
            "#version = :version",
            "#updated_at = :updated_at",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        let mut set = |name: &str, value: AttributeValue| {
            names.insert(format!("#{name}"), name.to_string());
            values.insert(format!(":{name}"), value);
            sets.push(format!("#{name} = :{name}"));
        };
        let c = &changes;
        if let Some(v) = c.attempt {
            set("attempt", n(v));
        }
        if let Some(v) = &c.statement_id {
            set("statement_id", s(v));
        }
        if let Some(v) = c.rows {
            set("rows", n(v));
        }
        if let Some(v) = c.archive_bytes {
            set("archive_bytes", n(v));
        }
        if let Some(v) = &c.archive_key {
            set("archive_key", s(v));
        }
        if let Some(v) = &c.url_expires_at {
            set("url_expires_at", s(v));
        }
        if let Some(v) = &c.notified_at {
            set("notified_at", s(v));
        }
        if let Some(v) = &c.error_code {
            set("error_code", s(v));
        }
        if let Some(v) = &c.error_message {
            set("error_message", s(v));
        }
        let update = Update::builder()
            .table_name(&self.table)
            .key("request_id", s(&current.request_id))
            .key("sk", s(STATE_SK))
            .update_expression(if to.is_terminal() {
                format!(
                    "SET {} REMOVE lease_owner, lease_expires_at, {}",
                    sets.join(", "),
                    open::OPEN_SHARD
                )
            } else {
                format!("SET {}", sets.join(", "))
            })
            .condition_expression("#version = :expected")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .build()
            .unwrap_or_else(|_| unreachable!("table, key and expression are set"));
        let event = self.event_put(
            &current.request_id,
            next_version,
            current.status.as_str(),
            to,
            detail,
            now,
        );
        // The SDK's retries of this call resend the same token, so a retry after a lost
        // response is recognised by DynamoDB as the write it already made. A later call makes
        // a new write (new timestamp, new token); `already_written` recognises that case.
        let token = idempotency_token(&[
            &current.request_id,
            &next_version.to_string(),
            to.as_str(),
            &at,
        ]);
        let written = self
            .write_with_event(
                TransactWriteItem::builder().update(update).build(),
                event,
                token,
            )
            .await?;
        if !written && !self.already_written(current, next_version, to).await? {
            return Err(JobError::Conflict(format!(
                "{} moved on from {} (version {})",
                current.request_id,
                current.status.as_str(),
                current.version
            )));
        }
        let mut next = current.clone();
        next.status = to;
        next.version = next_version;
        next.updated_at = at;
        next.attempt = c.attempt.unwrap_or(next.attempt);
        next.statement_id = c.statement_id.clone().or(next.statement_id);
        next.rows = c.rows.or(next.rows);
        next.archive_bytes = c.archive_bytes.or(next.archive_bytes);
        next.archive_key = c.archive_key.clone().or(next.archive_key);
        next.url_expires_at = c.url_expires_at.clone().or(next.url_expires_at);
        next.notified_at = c.notified_at.clone().or(next.notified_at);
        next.error_code = c.error_code.clone().or(next.error_code);
        next.error_message = c.error_message.clone().or(next.error_message);
        Ok(next)
    }

    /// Whether the item already is what this job's transition from `current` to `to` wrote:
    /// a retried write whose first try succeeded but whose response was lost fails its
    /// condition although the write is ours. Only the holder of `current.version` can write
    /// `version` (a claim bumps the version, and transitions always change the status), so
    /// the next version in the target status can only be this job's own write.
    async fn already_written(
        &self,
        current: &StateItem,
        version: u64,
        to: Status,
    ) -> Result<bool, JobError> {
        Ok(self
            .load(&current.request_id)
            .await?
            .is_some_and(|now| now.version == version && now.status == to))
    }

    /// Writes the state item and its history event in one transaction, with a client request
    /// token that makes a retry of the same write idempotent for DynamoDB's 10-minute window.
    /// Returns false when a condition failed (the state item was not as expected), in which
    /// case nothing was written.
    async fn write_with_event(
        &self,
        state: TransactWriteItem,
        event: Put,
        token: String,
    ) -> Result<bool, JobError> {
        let result = self
            .client
            .transact_write_items()
            .transact_items(state)
            .transact_items(TransactWriteItem::builder().put(event).build())
            .client_request_token(token)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(AwsError::from_sdk("dynamodb", "TransactWriteItems", e).into()),
        }
    }

    /// The current state item (strongly consistent read).
    pub async fn load(&self, request_id: &str) -> Result<Option<StateItem>, JobError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("request_id", s(request_id))
            .key("sk", s(STATE_SK))
            .consistent_read(true)
            .send()
            .await
            .aws("dynamodb", "GetItem")?;
        out.item.map(|item| parse_state(&item)).transpose()
    }

    /// Every history event, oldest first.
    pub async fn history(&self, request_id: &str) -> Result<Vec<Event>, JobError> {
        let mut events = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("request_id = :id AND begins_with(sk, :prefix)")
            .expression_attribute_values(":id", s(request_id))
            .expression_attribute_values(":prefix", s("event#"))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        while let Some(item) = pages.next().await {
            let item = item.aws("dynamodb", "Query")?;
            let get = |k: &str| {
                item.get(k)
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default()
            };
            events.push(Event {
                at: get("at"),
                from: get("from"),
                to: get("to"),
                worker: get("worker"),
                detail: get("detail"),
            });
        }
        Ok(events)
    }
}

/// A ClientRequestToken (at most 36 characters) derived from what identifies one write.
fn idempotency_token(parts: &[&str]) -> String {
    let mut hex = crate::message::hex_sha256(parts.join("\n").as_bytes());
    hex.truncate(32);
    hex
}

fn is_condition_failure<R>(
    e: &aws_sdk_dynamodb::error::SdkError<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
        R,
    >,
) -> bool {
    e.as_service_error().is_some_and(|se| match se {
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(t) => t
            .cancellation_reasons()
            .iter()
            .any(|r| r.code() == Some("ConditionalCheckFailed")),
        _ => false,
    })
}

fn parse_state(item: &HashMap<String, AttributeValue>) -> Result<StateItem, JobError> {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let num = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let bad = |what: &str| JobError::Conflict(format!("state item has no valid {what}"));
    let status = text("status")
        .and_then(|v| Status::parse(&v))
        .ok_or_else(|| bad("status"))?;
    Ok(StateItem {
        request_id: text("request_id").ok_or_else(|| bad("request_id"))?,
        status,
        attempt: num("attempt").unwrap_or(0) as u32,
        statement_id: text("statement_id"),
        query: text("query"),
        requested_by: text("requested_by"),
        created_at: text("created_at").unwrap_or_default(),
        updated_at: text("updated_at").unwrap_or_default(),
        rows: num("rows"),
        archive_bytes: num("archive_bytes"),
        archive_key: text("archive_key"),
        url_expires_at: text("url_expires_at"),
        notified_at: text("notified_at"),
        error_code: text("error_code"),
        error_message: text("error_message"),
        request: text("request"),
        fingerprint: text("fingerprint"),
        redrives: num("redrives").unwrap_or(0) as u32,
        cancel_requested: item
            .get("cancel_requested")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false),
        lease_owner: text("lease_owner"),
        lease_expires_at: num("lease_expires_at"),
        version: num("version").ok_or_else(|| bad("version"))?,
    })
}
