//! Leases and cancellation flags on the state item: which job is working on a request and
//! until when, and whether someone asked for it to stop. Neither is a transition, so neither
//! writes a history event; a claim bumps the version so that a previous owner's transitions
//! fail. A lease names one job ([`LeaseOwner`]: the worker id and a token of the job), so two
//! deliveries of one request in the same process never share a lease.

use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::types::AttributeValue;

use super::{STATE_SK, StateItem, StateStore, Status, epoch_secs, n, s};
use crate::aws::AwsError;
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
            .client
            .update_item()
            .table_name(&self.table)
            .key("request_id", s(request_id))
            .key("sk", s(STATE_SK))
            .update_expression("SET cancel_requested = :yes")
            .condition_expression("attribute_exists(request_id) AND NOT #status IN (:c, :f, :x)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .expression_attribute_values(":c", s(Status::Completed.as_str()))
            .expression_attribute_values(":f", s(Status::Failed.as_str()))
            .expression_attribute_values(":x", s(Status::Cancelled.as_str()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Some(item)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                self.load(request_id).await
            }
            Err(e) => Err(AwsError::from_sdk("dynamodb", "UpdateItem", e).into()),
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
            .client
            .update_item()
            .table_name(&self.table)
            .key("request_id", s(&item.request_id))
            .key("sk", s(STATE_SK))
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
        match result {
            Ok(_) => Ok(claimed),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
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
            Err(e) => Err(AwsError::from_sdk("dynamodb", "UpdateItem", e).into()),
        }
    }

    /// Extends this job's lease; a [`JobError::Conflict`] means it was lost. Repeating it
    /// (a retry after a lost response) is harmless: the condition still holds.
    pub async fn renew(
        &self,
        request_id: &str,
        owner: &LeaseOwner,
        lease: Duration,
    ) -> Result<(), JobError> {
        let expires = epoch_secs(SystemTime::now()) + lease.as_secs().max(1);
        self.update_own_lease(
            request_id,
            owner,
            "SET lease_expires_at = :exp",
            Some(expires),
        )
        .await
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

    async fn update_own_lease(
        &self,
        request_id: &str,
        owner: &LeaseOwner,
        expression: &str,
        expires: Option<u64>,
    ) -> Result<(), JobError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("request_id", s(request_id))
            .key("sk", s(STATE_SK))
            .update_expression(expression)
            .condition_expression("lease_owner = :me")
            .expression_attribute_values(":me", s(owner.as_str()));
        if let Some(expires) = expires {
            req = req.expression_attribute_values(":exp", n(expires));
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Err(JobError::Conflict(format!(
                    "the lease on {request_id} is no longer held by this job ({})",
                    owner.as_str()
                )))
            }
            Err(e) => Err(AwsError::from_sdk("dynamodb", "UpdateItem", e).into()),
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
