//! The sparse index of open requests that the sweeper reads instead of scanning the table.
//! A request's state item carries `open_shard` from creation until its terminal transition
//! removes it, so the global secondary index [`OPEN_INDEX`] (partition key `open_shard`, sort
//! key `updated_at`, keys only) holds exactly the open requests, ordered by when they last
//! moved. Requests are spread over [`OPEN_SHARDS`] partitions by a hash of their id, so no
//! index partition takes every write.

use std::collections::HashMap;
use std::time::SystemTime;

use aws_sdk_dynamodb::types::{TransactWriteItem, Update};

use super::{
    Attributes, STATE_SK, StateItem, StateStore, epoch_secs, idempotency_token, n, s, timestamp,
};
use crate::aws::AwsResultExt;
use crate::error::JobError;

/// The attribute that puts a state item in the index while the request is open.
pub const OPEN_SHARD: &str = "open_shard";
/// The index's name (the table's definition in `devstack/lib/resources.py` and the docs).
pub const OPEN_INDEX: &str = "open-requests";
/// Partitions of the index. Changing it strands requests in the old partitions: fixed.
pub const OPEN_SHARDS: u32 = 8;

/// The index partition of a request.
pub(super) fn shard_of(request_id: &str) -> String {
    let hex = crate::message::hex_sha256(request_id.as_bytes());
    let first = u32::from_str_radix(hex.get(..2).unwrap_or("0"), 16).unwrap_or(0);
    shard_name(first % OPEN_SHARDS)
}

fn shard_name(shard: u32) -> String {
    format!("open-{shard}")
}

impl StateStore {
    /// Ids of open requests in index partition `shard` that have not moved since `before`
    /// (an RFC 3339 timestamp as written by [`timestamp`]), oldest first, at most `limit`.
    pub async fn idle_open_requests(
        &self,
        shard: u32,
        before: &str,
        limit: i32,
    ) -> Result<Vec<String>, JobError> {
        let open = self
            .least_recently_moved(shard, Some(before), limit)
            .await?;
        Ok(open.into_iter().map(|(id, _)| id).collect())
    }

    /// When the open request in index partition `shard` that has not moved for longest last
    /// moved (its `updated_at`), or None when the partition holds no open request.
    pub async fn longest_idle_since(&self, shard: u32) -> Result<Option<String>, JobError> {
        let open = self.least_recently_moved(shard, None, 1).await?;
        Ok(open.into_iter().next().map(|(_, at)| at))
    }

    /// The open requests of partition `shard` (moved before `before`, if given), least
    /// recently moved first, at most `limit`: (request id, updated_at).
    async fn least_recently_moved(
        &self,
        shard: u32,
        before: Option<&str>,
        limit: i32,
    ) -> Result<Vec<(String, String)>, JobError> {
        let condition = if before.is_some() {
            "#shard = :shard AND updated_at < :before"
        } else {
            "#shard = :shard"
        };
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(OPEN_INDEX)
            .key_condition_expression(condition)
            .expression_attribute_names("#shard", OPEN_SHARD)
            .expression_attribute_values(":shard", s(shard_name(shard)))
            .limit(limit);
        if let Some(before) = before {
            query = query.expression_attribute_values(":before", s(before));
        }
        let out = query.send().await.aws("dynamodb", "Query")?;
        let text = |i: &Attributes, k: &str| i.get(k).and_then(|v| v.as_s().ok()).cloned();
        Ok(out
            .items()
            .iter()
            .filter_map(|i| Some((text(i, "request_id")?, text(i, "updated_at")?)))
            .collect())
    }

    /// Records that the sweeper sends the request again: counts the re-drive, marks the
    /// request as moved now and writes a history event — only if it is still as `item` says
    /// (same version) and no live job holds it. The version is bumped, so of several
    /// replicas sweeping at once exactly one re-drives. Returns whether it was recorded.
    pub async fn mark_redriven(&self, item: &StateItem, detail: &str) -> Result<bool, JobError> {
        let now = SystemTime::now();
        let at = timestamp(now);
        let next = item.version + 1;
        #[expect(clippy::expect_used, reason = "table, key and expression are all set")]
        let update = Update::builder()
            .table_name(&self.table)
            .key("request_id", s(&item.request_id))
            .key("sk", s(STATE_SK))
            .update_expression("SET #version = :next, updated_at = :at ADD redrives :one")
            .condition_expression(
                "#version = :v AND (attribute_not_exists(lease_owner) OR lease_expires_at < :now)",
            )
            .set_expression_attribute_names(Some(HashMap::from([(
                "#version".to_string(),
                "version".to_string(),
            )])))
            .set_expression_attribute_values(Some(HashMap::from([
                (":next".to_string(), n(next)),
                (":at".to_string(), s(&at)),
                (":one".to_string(), n(1)),
                (":v".to_string(), n(item.version)),
                (":now".to_string(), n(epoch_secs(now))),
            ])))
            .build()
            .expect("a complete update");
        let event = self.event_put(
            &item.request_id,
            next,
            item.status.as_str(),
            item.status,
            detail,
            now,
        );
        let token = idempotency_token(&[&item.request_id, "redrive", &next.to_string(), &at]);
        self.write_with_event(
            TransactWriteItem::builder().update(update).build(),
            event,
            token,
        )
        .await
    }
}
