//! The DynamoDB items and their one mapping to and from attributes: the `state` item of a
//! request ([`StateItem`]), what a transition sets ([`changed`]) and the history events
//! ([`Event`]). docs/ARCHITECTURE.md ("The DynamoDB item") describes each attribute.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::Status;
use crate::error::JobError;

/// The attributes of a DynamoDB item.
pub(super) type Attributes = HashMap<String, AttributeValue>;

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The attribute of the destinations still to be told (a string set).
pub(super) const EVENTS_DUE: &str = "events_due";

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
    /// SHA-256 of the archive object, lowercase hex.
    pub archive_sha256: Option<String>,
    /// The archive's entries (name, CRC-32, size, rows) as a JSON array, for the events.
    pub archive_entries: Option<String>,
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
    /// Event destinations still to be told that the request ended (set by the terminal
    /// transition, removed once every one was told or given up): the outbox that makes
    /// events at-least-once (docs/EVENTS.md).
    pub events_due: Vec<String>,
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

/// Adds `value` under `name` when there is one.
fn put<T>(item: &mut Attributes, name: &str, value: Option<T>, to: fn(T) -> AttributeValue) {
    if let Some(v) = value {
        item.insert(name.to_string(), to(v));
    }
}

fn text(v: String) -> AttributeValue {
    s(v)
}

fn number(v: u64) -> AttributeValue {
    n(v)
}

impl StateItem {
    /// The item's attributes, without the key's sort key and the table's bookkeeping
    /// (`sk`, `expires_at`, `open_shard`), which the store adds.
    pub(super) fn to_attributes(&self) -> Attributes {
        let mut item = Attributes::from([
            ("request_id".to_string(), s(&self.request_id)),
            ("status".to_string(), s(self.status.as_str())),
            ("attempt".to_string(), n(self.attempt)),
            ("created_at".to_string(), s(&self.created_at)),
            ("updated_at".to_string(), s(&self.updated_at)),
            ("version".to_string(), n(self.version)),
        ]);
        let i = &mut item;
        put(i, "statement_id", self.statement_id.clone(), text);
        put(i, "query", self.query.clone(), text);
        put(i, "requested_by", self.requested_by.clone(), text);
        put(i, "rows", self.rows, number);
        put(i, "archive_bytes", self.archive_bytes, number);
        put(i, "archive_key", self.archive_key.clone(), text);
        put(i, "archive_sha256", self.archive_sha256.clone(), text);
        put(i, "archive_entries", self.archive_entries.clone(), text);
        put(i, "url_expires_at", self.url_expires_at.clone(), text);
        put(i, "notified_at", self.notified_at.clone(), text);
        put(i, "error_code", self.error_code.clone(), text);
        put(i, "error_message", self.error_message.clone(), text);
        put(i, "request", self.request.clone(), text);
        put(i, "fingerprint", self.fingerprint.clone(), text);
        put(i, "redrives", Some(self.redrives).filter(|r| *r > 0), n);
        put(i, "lease_owner", self.lease_owner.clone(), text);
        put(i, "lease_expires_at", self.lease_expires_at, number);
        if self.cancel_requested {
            i.insert("cancel_requested".into(), AttributeValue::Bool(true));
        }
        if !self.events_due.is_empty() {
            i.insert(
                EVENTS_DUE.into(),
                AttributeValue::Ss(self.events_due.clone()),
            );
        }
        item
    }

    /// Reads a state item. An item without a readable status, id or version (a status
    /// written by a newer version, a hand edit) is [`JobError::Unreadable`].
    pub(super) fn from_attributes(item: &Attributes) -> Result<StateItem, JobError> {
        let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let num = |k: &str| {
            item.get(k)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let small = |k: &str| num(k).and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
        let bad = |what: &str| {
            let found = text(what).unwrap_or_else(|| "nothing".into());
            JobError::Unreadable(format!("{what} is {:?}", crate::error::redact(&found)))
        };
        Ok(StateItem {
            request_id: text("request_id").ok_or_else(|| bad("request_id"))?,
            status: text("status")
                .and_then(|v| Status::parse(&v))
                .ok_or_else(|| bad("status"))?,
            attempt: small("attempt"),
            statement_id: text("statement_id"),
            query: text("query"),
            requested_by: text("requested_by"),
            created_at: text("created_at").unwrap_or_default(),
            updated_at: text("updated_at").unwrap_or_default(),
            rows: num("rows"),
            archive_bytes: num("archive_bytes"),
            archive_key: text("archive_key"),
            archive_sha256: text("archive_sha256"),
            archive_entries: text("archive_entries"),
            url_expires_at: text("url_expires_at"),
            notified_at: text("notified_at"),
            error_code: text("error_code"),
            error_message: text("error_message"),
            request: text("request"),
            fingerprint: text("fingerprint"),
            redrives: small("redrives"),
            cancel_requested: item
                .get("cancel_requested")
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(false),
            lease_owner: text("lease_owner"),
            lease_expires_at: num("lease_expires_at"),
            // A set comes back in any order.
            events_due: item
                .get(EVENTS_DUE)
                .and_then(|v| v.as_ss().ok())
                .map(|names| {
                    let mut names = names.clone();
                    names.sort();
                    names
                })
                .unwrap_or_default(),
            version: num("version").ok_or_else(|| bad("version"))?,
        })
    }
}

/// The attributes of `next` that differ from `current`: what a transition from `current` to
/// `next` sets. (Transitions only ever set attributes; the terminal one also removes the
/// lease, which the store does.)
pub(super) fn changed(current: &StateItem, next: &StateItem) -> Attributes {
    let before = current.to_attributes();
    next.to_attributes()
        .into_iter()
        .filter(|(name, value)| before.get(name) != Some(value))
        .collect()
}

impl Event {
    /// The event's attributes, without its key and expiry, which the store adds.
    pub(super) fn to_attributes(&self) -> Attributes {
        Attributes::from([
            ("from".to_string(), s(&self.from)),
            ("to".to_string(), s(&self.to)),
            ("at".to_string(), s(&self.at)),
            ("worker".to_string(), s(&self.worker)),
            ("detail".to_string(), s(&self.detail)),
        ])
    }

    pub(super) fn from_attributes(item: &Attributes) -> Event {
        let get = |k: &str| {
            item.get(k)
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default()
        };
        Event {
            at: get("at"),
            from: get("from"),
            to: get("to"),
            worker: get("worker"),
            detail: get("detail"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> StateItem {
        StateItem {
            request_id: "r1".into(),
            status: Status::Notifying,
            attempt: 2,
            statement_id: Some("st".into()),
            query: Some("orders".into()),
            requested_by: Some("cli".into()),
            created_at: "2026-01-01T00:00:00.000000Z".into(),
            updated_at: "2026-01-01T00:01:00.000000Z".into(),
            rows: Some(10),
            archive_bytes: Some(2048),
            archive_key: Some("exports/r1.zip".into()),
            archive_sha256: Some("ab".repeat(32)),
            archive_entries: Some("[]".into()),
            url_expires_at: Some("2026-01-02T00:00:00.000000Z".into()),
            notified_at: None,
            error_code: None,
            error_message: None,
            request: Some("{}".into()),
            fingerprint: Some("f".into()),
            redrives: 1,
            cancel_requested: true,
            lease_owner: Some("w#1".into()),
            lease_expires_at: Some(99),
            events_due: vec!["a".into(), "b".into()],
            version: 7,
        }
    }

    #[test]
    fn a_state_item_reads_back_as_it_was_written() {
        let item = full();
        assert_eq!(
            StateItem::from_attributes(&item.to_attributes()).ok(),
            Some(item)
        );
    }

    #[test]
    fn a_transition_sets_exactly_what_changed() {
        let current = full();
        let mut next = current.clone();
        next.notified_at = Some("now".into());
        next.error_code = Some("x".into());
        let set = changed(&current, &next);
        assert_eq!(set.len(), 2, "{set:?}");
        let mut attributes = current.to_attributes();
        attributes.extend(set);
        assert_eq!(StateItem::from_attributes(&attributes).ok(), Some(next));
    }

    #[test]
    fn an_item_with_a_status_from_a_newer_version_is_unreadable() {
        let mut attributes = full().to_attributes();
        attributes.insert("status".into(), s("PAUSED"));
        let e = StateItem::from_attributes(&attributes).err();
        assert!(
            matches!(&e, Some(JobError::Unreadable(why)) if why.contains("PAUSED")),
            "{e:?}"
        );
        assert_eq!(e.map(|e| e.code()), Some("unreadable_state"));
    }
}
