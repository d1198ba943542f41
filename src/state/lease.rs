//! Leases and cancellation flags on the state item: which job is working on a request and
//! until when, and whether someone asked for it to stop. Neither is a transition, so neither
//! writes a history event; a claim bumps the version so that a previous owner's transitions
//! fail. A lease names one job ([`LeaseOwner`]: the worker id and a token of the job), so two
//! deliveries of one request in the same process never share a lease.

use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::types::AttributeValue;

use super::{
    STATE_SK, StateItem, StateStore, Status, epoch_secs, lease_end, n, s, timestamp, written,
};
use crate::error::JobError;

/// Who holds a lease: one job of one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOwner(String);

impl LeaseOwner {
    /// A new owner for one job of `worker`.
    pub fn new_job(worker: &str) -> LeaseOwner {
        LeaseOwner(format!("{worker}#{}", uuid::Uuid::new_v4().simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl StateStore {
    /// Asks for a request to be cancelled. Returns the item as it was, or None when there is
    /// no such request; a terminal request is left unchanged.
    pub async fn request_cancel(&self, request_id: &str) -> Result<Option<StateItem>, JobError> {
        let Some(item) = self.load(request_id).await? else {
            return Ok(None);
        };
        if item.status.is_terminal() {
            return Ok(Some(item));
        }
        let result = self
            .state_update(request_id)
            .update_expression("SET cancel_requested = :yes")
            .condition_expression("attribute_exists(request_id) AND NOT #status IN (:c, :f, :x)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .expression_attribute_values(":c", s(Status::Completed.as_str()))
            .expression_attribute_values(":f", s(Status::Failed.as_str()))
            .expression_attribute_values(":x", s(Status::Cancelled.as_str()))
            .send()
            .await;
        if written("UpdateItem", result)? {
            Ok(Some(item))
        } else {
            self.load(request_id).await
        }
    }

    /// Takes the lease on a request for `lease`: free, expired or already ours. The version
    /// is bumped, so a previous owner that is still running can no longer record anything.
    /// A lease held by another live worker is a [`JobError::Conflict`].
    pub async fn claim(
        &self,
        item: &StateItem,
        owner: &LeaseOwner,
        lease: Duration,
    ) -> Result<StateItem, JobError> {
        let now = epoch_secs(SystemTime::now());
        let expires = now + lease.as_secs().max(1);
        let result = self
            .state_update(&item.request_id)
            .update_expression("SET lease_owner = :me, lease_expires_at = :exp, #version = :next")
            .condition_expression(
                "#version = :v AND (attribute_not_exists(lease_owner) OR lease_owner = :me OR lease_expires_at < :now)",
            )
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":me", s(owner.as_str()))
            .expression_attribute_values(":exp", n(expires))
            .expression_attribute_values(":next", n(item.version + 1))
            .expression_attribute_values(":v", n(item.version))
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        let mut claimed = item.clone();
        claimed.lease_owner = Some(owner.as_str().to_string());
        claimed.lease_expires_at = Some(expires);
        claimed.version += 1;
        if written("UpdateItem", result)? {
            return Ok(claimed);
        }
        let current = self.load(&item.request_id).await?;
        // A retry after a lost response finds its own claim: that is success.
        if let Some(c) = &current
            && c.version == claimed.version
            && c.lease_owner.as_deref() == Some(owner.as_str())
        {
            return Ok(StateItem {
                lease_expires_at: c.lease_expires_at,
                ..claimed
            });
        }
        Err(JobError::Conflict(
            match current.and_then(|c| c.lease_owner.zip(c.lease_expires_at)) {
                Some((holder, until)) if until >= now && holder != owner.as_str() => {
                    format!("leased by {holder} for {} more s", until - now)
                }
                _ => "changed while being claimed".into(),
            },
        ))
    }

    /// Extends this job's lease; a [`JobError::Conflict`] means it was lost. Repeating it
    /// (a retry after a lost response) is harmless: the condition still holds. A request that
    /// has ended holds no lease, and that is not a loss.
    pub async fn renew(
        &self,
        request_id: &str,
        owner: &LeaseOwner,
        lease: Duration,
    ) -> Result<(), JobError> {
        let expires = lease_end(lease);
        let renewed = self
            .update_own_lease(
                request_id,
                owner,
                "SET lease_expires_at = :exp",
                Some(expires),
            )
            .await;
        match renewed {
            // The job ended the request (which gives the lease up) and is telling its event
            // destinations: nothing is left to hold, and the job must not be stopped.
            Err(JobError::Conflict(why)) => match self.load(request_id).await {
                Ok(Some(item)) if item.status.is_terminal() => Ok(()),
                _ => Err(JobError::Conflict(why)),
            },
            other => other,
        }
    }

    /// Gives the lease up, so a redelivery can be taken at once. A lease that is no longer
    /// this job's (already released — e.g. a retry after a lost response — or taken over) is
    /// left as it is, and that is success too.
    pub async fn release(&self, request_id: &str, owner: &LeaseOwner) -> Result<(), JobError> {
        match self
            .update_own_lease(
                request_id,
                owner,
                "REMOVE lease_owner, lease_expires_at",
                None,
            )
            .await
        {
            Err(JobError::Conflict(_)) => Ok(()),
            other => other,
        }
    }

    /// Gives the lease up for a request put back on the queue for its requester's fair share,
    /// and marks it as having moved now (`updated_at`), so the sweeper does not take a request
    /// that waits its turn for one whose message has gone.
    pub async fn release_deferred(
        &self,
        request_id: &str,
        owner: &LeaseOwner,
    ) -> Result<(), JobError> {
        let result = self
            .state_update(request_id)
            .update_expression("SET updated_at = :now REMOVE lease_owner, lease_expires_at")
            .condition_expression("lease_owner = :me")
            .expression_attribute_values(":me", s(owner.as_str()))
            .expression_attribute_values(":now", s(timestamp(SystemTime::now())))
            .send()
            .await;
        // Not made: the lease was not this job's any more, and that is success too.
        written("UpdateItem", result).map(|_| ())
    }

    /// An update of `request_id`'s state item.
    fn state_update(
        &self,
        request_id: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("request_id", s(request_id))
            .key("sk", s(STATE_SK))
    }

    async fn update_own_lease(
        &self,
        request_id: &str,
        owner: &LeaseOwner,
        expression: &str,
        expires: Option<u64>,
    ) -> Result<(), JobError> {
        let mut req = self
            .state_update(request_id)
            .update_expression(expression)
            .condition_expression("lease_owner = :me")
            .expression_attribute_values(":me", s(owner.as_str()));
        if let Some(expires) = expires {
            req = req.expression_attribute_values(":exp", n(expires));
        }
        if written("UpdateItem", req.send().await)? {
            Ok(())
        } else {
            Err(JobError::Conflict(format!(
                "the lease on {request_id} is no longer held by this job ({})",
                owner.as_str()
            )))
        }
    }

    /// Whether `cancel` was asked for this request.
    pub async fn cancel_requested(&self, request_id: &str) -> Result<bool, JobError> {
        Ok(self
            .load(request_id)
            .await?
            .is_some_and(|i| i.cancel_requested))
    }
}
