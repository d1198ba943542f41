//! History events that record no transition: what became of the completion events an ended
//! request owed (the outbox: the terminal transition records which destinations are due,
//! `events_due`, and keeps the request in the open-requests index; once the job has told them,
//! [`StateStore::events_told`] removes the set and the index entry and records one history
//! event per destination, in one transaction), and notes such as a wait for a fleet-wide slot
//! ([`StateStore::note`]).

use std::time::SystemTime;

use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};

use super::item::{EVENTS_DUE, Event, s};
use super::{STATE_SK, StateItem, StateStore, idempotency_token, is_condition_failure, timestamp};
use crate::aws::AwsError;
use crate::error::JobError;

impl StateStore {
    /// Clears `item`'s outbox and records `details` (one per destination) in its history.
    /// Repeating it after a lost response, or after another worker did it, finds the outbox
    /// gone: that is success, and nothing is recorded twice.
    pub async fn events_told(&self, item: &StateItem, details: &[String]) -> Result<(), JobError> {
        let now = SystemTime::now();
        let at = timestamp(now);
        #[expect(clippy::expect_used, reason = "table, key and expression are all set")]
        let clear = Update::builder()
            .table_name(&self.table)
            .key("request_id", s(&item.request_id))
            .key("sk", s(STATE_SK))
            .update_expression("REMOVE #due, #open")
            .condition_expression("attribute_exists(#due)")
            .expression_attribute_names("#due", EVENTS_DUE)
            .expression_attribute_names("#open", super::open::OPEN_SHARD)
            .build()
            .expect("a complete update");
        let mut write = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(clear).build());
        for (i, detail) in details.iter().enumerate() {
            write = write.transact_items(
                TransactWriteItem::builder()
                    .put(self.note_put(item, i, detail, now))
                    .build(),
            );
        }
        let token = idempotency_token(&[&item.request_id, "events told", &at]);
        match write.client_request_token(token).send().await {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(AwsError::from_sdk("dynamodb", "TransactWriteItems", e).into()),
        }
    }

    /// Adds `detail` to the request's history without changing it.
    pub async fn note(&self, item: &StateItem, detail: &str) -> Result<(), JobError> {
        self.client
            .put_item()
            .set_table_name(Some(self.table.clone()))
            .set_item(Some(self.note_put(item, 0, detail, SystemTime::now()).item))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb", "PutItem", e))?;
        Ok(())
    }

    /// History event number `seq` of a note written at `now`: from and to are the request's
    /// status, and it sorts after the transition that recorded the status.
    fn note_put(&self, item: &StateItem, seq: usize, detail: &str, now: SystemTime) -> Put {
        let at = timestamp(now);
        let status = item.status.as_str();
        let event = Event {
            at: at.clone(),
            from: status.to_string(),
            to: status.to_string(),
            worker: self.worker.clone(),
            detail: detail.to_string(),
        };
        let mut attributes = event.to_attributes();
        attributes.extend([
            ("request_id".to_string(), s(&item.request_id)),
            (
                "sk".to_string(),
                s(format!("event#{at}#{:06}.{seq:02}", item.version)),
            ),
            ("expires_at".to_string(), self.expires_at(now)),
        ]);
        self.put_new(attributes)
    }
}
