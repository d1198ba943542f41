//! Fleet-wide counting semaphores in the state table, shared by every replica: one item per
//! semaphore whose `holders` map names each holder and until when (epoch seconds) it holds
//! its slot. A holder renews its slot with its lease; a holder that died stops renewing, and
//! whoever finds the semaphore full removes the lapsed entries (each removal conditional on the
//! expiry it saw, so a renewal in between wins) and tries again. Every change is one
//! conditional write on the one item, so no slot is counted twice or lost
//! (docs/ARCHITECTURE.md, "Fleet-wide limits").

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{n, s};
use super::{StateStore, epoch_secs, lease_end, written};
use crate::aws::AwsResultExt;
use crate::error::JobError;

/// The partition of the semaphore items: `#` is never part of a request id.
const FLEET: &str = "#fleet";

/// The semaphore of running Redshift statements (`redshift.max_concurrent_statements`).
pub const STATEMENTS: &str = "semaphore#statements";

/// The semaphore of one requester's requests in flight (`worker.max_in_flight_per_requester`).
pub fn requester_semaphore(requested_by: &str) -> String {
    format!("semaphore#requester#{requested_by}")
}

/// Rounds of clearing lapsed holders before a full semaphore is reported full.
const CLEARING_ROUNDS: usize = 3;

/// The outcome of [`StateStore::take_slot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Held,
    /// Every slot is held by a live holder; how many there are.
    Full {
        in_use: usize,
    },
}

impl StateStore {
    /// Takes a slot of `semaphore` for `holder` until `lease` from now, if it holds one
    /// already or fewer than `cap` live holders do. A holder whose lease lapsed is freed unless
    /// `still_held` says what it holds the slot for goes on (a statement a killed worker left
    /// running), in which case its lease is extended.
    pub async fn take_slot<F, Fut>(
        &self,
        semaphore: &str,
        holder: &str,
        cap: u32,
        lease: Duration,
        still_held: F,
    ) -> Result<Taken, JobError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = bool>,
    {
        for _ in 0..CLEARING_ROUNDS {
            let until = lease_end(lease);
            let taken = self
                .set_holder(
                    semaphore,
                    holder,
                    until,
                    Some("attribute_exists(holders.#h) OR size(holders) < :cap"),
                    Some(cap),
                )
                .await?;
            if taken {
                return Ok(Taken::Held);
            }
            let Some(holders) = self.holders(semaphore).await? else {
                self.create_semaphore(semaphore).await?;
                continue;
            };
            let now = epoch_secs(SystemTime::now());
            let lapsed: Vec<(&String, &u64)> = holders.iter().filter(|(_, u)| **u < now).collect();
            if lapsed.is_empty() {
                return Ok(Taken::Full {
                    in_use: holders.len(),
                });
            }
            let mut freed = 0;
            for (gone, seen) in lapsed {
                if still_held(gone.clone()).await {
                    // Conditional on the expiry seen, like a removal.
                    let until = now + lease.as_secs().max(1);
                    self.extend_lapsed(semaphore, gone, *seen, until).await?;
                    continue;
                }
                tracing::info!(
                    semaphore,
                    holder = gone.as_str(),
                    "a slot whose holder stopped renewing it is free again"
                );
                self.remove_holder(semaphore, gone, Some(*seen)).await?;
                freed += 1;
            }
            if freed == 0 {
                return Ok(Taken::Full {
                    in_use: holders.len(),
                });
            }
        }
        let in_use = self.holders(semaphore).await?.map_or(0, |h| h.len());
        Ok(Taken::Full { in_use })
    }

    /// Records `holder` in `semaphore` whatever the count: for a statement that is running
    /// already (a worker re-attaching to it), which holds a slot whether or not it was
    /// recorded.
    pub async fn hold_slot(
        &self,
        semaphore: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<(), JobError> {
        let until = lease_end(lease);
        if !self
            .set_holder(
                semaphore,
                holder,
                until,
                Some("attribute_exists(holders)"),
                None,
            )
            .await?
        {
            self.create_semaphore(semaphore).await?;
            self.set_holder(semaphore, holder, until, None, None)
                .await?;
        }
        Ok(())
    }

    /// Extends `holder`'s slot, if it holds one.
    pub async fn renew_slot(
        &self,
        semaphore: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<(), JobError> {
        let until = lease_end(lease);
        self.set_holder(
            semaphore,
            holder,
            until,
            Some("attribute_exists(holders.#h)"),
            None,
        )
        .await?;
        Ok(())
    }

    /// Gives `holder`'s slot back (nothing to do when it holds none).
    pub async fn give_slot(&self, semaphore: &str, holder: &str) -> Result<(), JobError> {
        self.remove_holder(semaphore, holder, None).await
    }

    /// How many hold a slot of `semaphore` now, lapsed or not (None: nobody ever did).
    pub async fn slots_in_use(&self, semaphore: &str) -> Result<Option<usize>, JobError> {
        Ok(self.holders(semaphore).await?.map(|h| h.len()))
    }

    /// Sets `holders.<holder>` to `until` if `condition` holds; false when it did not.
    async fn set_holder(
        &self,
        semaphore: &str,
        holder: &str,
        until: u64,
        condition: Option<&str>,
        cap: Option<u32>,
    ) -> Result<bool, JobError> {
        let mut update = self
            .holder_update(semaphore, holder)
            .update_expression("SET holders.#h = :until")
            .set_condition_expression(condition.map(str::to_string))
            .expression_attribute_values(":until", n(until));
        if let Some(cap) = cap {
            update = update.expression_attribute_values(":cap", n(cap));
        }
        written("UpdateItem", update.send().await)
    }

    /// Extends a lapsed holder whose slot is still in use, if its expiry is still `seen`.
    async fn extend_lapsed(
        &self,
        semaphore: &str,
        holder: &str,
        seen: u64,
        until: u64,
    ) -> Result<(), JobError> {
        let update = self
            .holder_update(semaphore, holder)
            .update_expression("SET holders.#h = :until")
            .condition_expression("holders.#h = :seen")
            .expression_attribute_values(":seen", n(seen))
            .expression_attribute_values(":until", n(until));
        written("UpdateItem", update.send().await).map(|_| ())
    }

    /// An update of the semaphore item in which `#h` names `holder`'s entry.
    fn holder_update(
        &self,
        semaphore: &str,
        holder: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("request_id", s(FLEET))
            .key("sk", s(semaphore))
            .expression_attribute_names("#h", holder)
    }

    /// Removes `holder`, only if its expiry is still `seen` when given.
    async fn remove_holder(
        &self,
        semaphore: &str,
        holder: &str,
        seen: Option<u64>,
    ) -> Result<(), JobError> {
        let mut update = self
            .holder_update(semaphore, holder)
            .update_expression("REMOVE holders.#h")
            .condition_expression(match seen {
                Some(_) => "holders.#h = :seen",
                None => "attribute_exists(holders)",
            });
        if let Some(seen) = seen {
            update = update.expression_attribute_values(":seen", n(seen));
        }
        // Not made: renewed meanwhile, removed by someone else, or no semaphore yet.
        written("UpdateItem", update.send().await).map(|_| ())
    }

    /// The semaphore's holders and their expiries (strongly consistent), None without one.
    async fn holders(&self, semaphore: &str) -> Result<Option<HashMap<String, u64>>, JobError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("request_id", s(FLEET))
            .key("sk", s(semaphore))
            .consistent_read(true)
            .send()
            .await
            .aws("dynamodb", "GetItem")?;
        Ok(out.item.map(|item| {
            item.get("holders")
                .and_then(|h| h.as_m().ok())
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            let until = v.as_n().ok().and_then(|v| v.parse().ok()).unwrap_or(0);
                            (k.clone(), until)
                        })
                        .collect()
                })
                .unwrap_or_default()
        }))
    }

    /// Creates the semaphore with no holder, unless it exists.
    async fn create_semaphore(&self, semaphore: &str) -> Result<(), JobError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("request_id", s(FLEET))
            .item("sk", s(semaphore))
            .item("holders", AttributeValue::M(HashMap::new()))
            .condition_expression("attribute_not_exists(request_id)")
            .send()
            .await;
        written("PutItem", put).map(|_| ())
    }
}
