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

mod conditional;
mod item;
mod lease;
mod open;
mod outbox;
mod slots;

use conditional::{is_condition_failure, written};
use item::{Attributes, changed, n, s};
pub use item::{Event, StateItem};
pub use lease::LeaseOwner;
pub use open::{OPEN_INDEX, OPEN_SHARDS};
pub use slots::{STATEMENTS, Taken, requester_semaphore};

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
        let event = Event {
            at: timestamp(now),
            from: from.to_string(),
            to: to.as_str().to_string(),
            worker: self.worker.clone(),
            detail: detail.to_string(),
        };
        let mut item = event.to_attributes();
        item.extend([
            ("request_id".to_string(), s(request_id)),
            (
                "sk".to_string(),
                s(format!("event#{}#{version:06}", event.at)),
            ),
            ("expires_at".to_string(), self.expires_at(now)),
        ]);
        self.put_new(item)
    }

    /// A put of a new item (it must not exist yet).
    fn put_new(&self, item: Attributes) -> Put {
        #[expect(clippy::expect_used, reason = "the table name and the item are set")]
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(request_id)")
            .build()
            .expect("a complete put")
    }

    /// Creates the request in QUEUED — leased to `lease`'s owner when given, so a new request
    /// needs no claim of its own — or returns the existing item when it is already known
    /// (whatever its fingerprint: the caller compares them).
    pub async fn create_or_load(
        &self,
        request_id: &RequestId,
        query: &str,
        requested_by: Option<&str>,
        asked: &Fingerprinted,
        lease: Option<(&LeaseOwner, Duration)>,
    ) -> Result<StateItem, JobError> {
        let now = SystemTime::now();
        let at = timestamp(now);
        let (lease_owner, lease_expires_at) = lease.map_or((None, None), |(owner, lease)| {
            (
                Some(owner.as_str().to_string()),
                Some(epoch_secs(now) + lease.as_secs().max(1)),
            )
        });
        let created = StateItem {
            request_id: request_id.to_string(),
            status: Status::Queued,
            attempt: 0,
            statement_id: None,
            query: Some(query.to_string()),
            requested_by: requested_by.map(str::to_string),
            created_at: at.clone(),
            updated_at: at.clone(),
            rows: None,
            archive_bytes: None,
            archive_key: None,
            archive_sha256: None,
            archive_entries: None,
            url_expires_at: None,
            notified_at: None,
            error_code: None,
            error_message: None,
            request: Some(asked.canonical.clone()).filter(|c| !c.is_empty()),
            fingerprint: Some(asked.fingerprint.clone()),
            redrives: 0,
            cancel_requested: false,
            lease_owner,
            lease_expires_at,
            events_due: Vec::new(),
            version: 1,
        };
        let mut item = created.to_attributes();
        item.extend([
            ("sk".to_string(), s(STATE_SK)),
            ("expires_at".to_string(), self.expires_at(now)),
            (
                open::OPEN_SHARD.to_string(),
                s(open::shard_of(request_id.as_str())),
            ),
        ]);
        let put = self.put_new(item);
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
        if self
            .write_with_event(TransactWriteItem::builder().put(put).build(), event, token)
            .await?
        {
            return Ok(created);
        }
        self.load(request_id.as_str()).await?.ok_or_else(|| {
            JobError::Conflict("state item vanished right after it was written".into())
        })
    }

    /// Moves `current` to `to`, also setting whatever `changes` made different in a copy of
    /// it, if nobody changed the request since it was read. Returns the item as recorded.
    pub async fn transition(
        &self,
        current: &StateItem,
        to: Status,
        changes: impl Fn(&mut StateItem),
        detail: &str,
    ) -> Result<StateItem, JobError> {
        let now = SystemTime::now();
        let at = timestamp(now);
        let next_version = current.version + 1;
        let mut next = current.clone();
        changes(&mut next);
        next.status = to;
        next.version = next_version;
        next.updated_at = at.clone();
        let set = changed(current, &next);
        let update = self.update_state(current, to, &set);
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
        if written {
            return Ok(next);
        }
        // A failed condition: this job's own write whose response was lost, a request asked
        // to stop, or one that moved on.
        match self.load(&current.request_id).await? {
            Some(now) if already_written(&now, next_version, to) => Ok(next),
            Some(now) if now.cancel_requested && now.version == current.version => {
                Err(JobError::Cancelled)
            }
            _ => Err(JobError::Conflict(format!(
                "{} moved on from {} (version {})",
                current.request_id,
                current.status.as_str(),
                current.version
            ))),
        }
    }

    /// The conditional update of a transition from `current`: sets `set`, and for a terminal
    /// status also gives up the lease and leaves the open-requests index (unless it owes
    /// events).
    fn update_state(&self, current: &StateItem, to: Status, set: &Attributes) -> Update {
        let mut names = HashMap::new();
        let mut values = HashMap::from([(":expected".to_string(), n(current.version))]);
        let mut sets = Vec::with_capacity(set.len());
        for (name, value) in set {
            names.insert(format!("#{name}"), name.clone());
            values.insert(format!(":{name}"), value.clone());
            sets.push(format!("#{name} = :{name}"));
        }
        // Sorted, so the same transition is always the same request.
        sets.sort();
        let mut expression = format!("SET {}", sets.join(", "));
        // A request asked to stop takes no further step but its end: the cancel flag rides on
        // every transition's condition instead of a read before each stage.
        let mut condition = "#version = :expected".to_string();
        if to.is_terminal() {
            // A request that still owes events stays in the index until they are told
            // (`events_told`), so the sweeper finds them if its job dies.
            expression.push_str(" REMOVE lease_owner, lease_expires_at");
            if !set.contains_key(item::EVENTS_DUE) {
                expression.push_str(&format!(", {}", open::OPEN_SHARD));
            }
        } else {
            condition.push_str(
                " AND (attribute_not_exists(cancel_requested) OR cancel_requested = :no)",
            );
            values.insert(":no".to_string(), AttributeValue::Bool(false));
        }
        #[expect(clippy::expect_used, reason = "table, key and expression are all set")]
        Update::builder()
            .table_name(&self.table)
            .key("request_id", s(&current.request_id))
            .key("sk", s(STATE_SK))
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .build()
            .expect("a complete update")
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
        out.item
            .map(|item| StateItem::from_attributes(&item))
            .transpose()
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
            events.push(Event::from_attributes(&item.aws("dynamodb", "Query")?));
        }
        Ok(events)
    }
}

/// Whether `now` already is what a transition to `to` at `version` wrote: a retried write
/// whose first try succeeded but whose response was lost fails its condition although the
/// write is ours. Only the holder of the previous version can write `version` (a claim bumps
/// the version, and transitions always change the status), so the next version in the target
/// status can only be this job's own write.
fn already_written(now: &StateItem, version: u64, to: Status) -> bool {
    now.version == version && now.status == to
}

/// When a lease of `lease` taken now ends (epoch seconds; at least a second from now).
fn lease_end(lease: Duration) -> u64 {
    epoch_secs(SystemTime::now()) + lease.as_secs().max(1)
}

/// A ClientRequestToken (at most 36 characters) derived from what identifies one write.
fn idempotency_token(parts: &[&str]) -> String {
    let mut hex = crate::message::hex_sha256(parts.join("\n").as_bytes());
    hex.truncate(32);
    hex
}
