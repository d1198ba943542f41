//! Leases and cancellation flags on the state item: which worker is working on a request and
//! until when, and whether someone asked for it to stop. Neither is a transition, so neither
//! writes a history event; a claim bumps the version so that a previous owner's transitions
//! fail.

use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::types::AttributeValue;

use super::{STATE_SK, StateItem, StateStore, Status, epoch_secs, n, s};
use crate::aws::AwsError;
use crate::error::JobError;

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
    pub async fn claim(&self, item: &StateItem, lease: Duration) -> Result<StateItem, JobError> {
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
            .expression_attribute_values(":me", s(&self.worker))
            .expression_attribute_values(":exp", n(expires))
            .expression_attribute_values(":next", n(item.version + 1))
            .expression_attribute_values(":v", n(item.version))
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        match result {
            Ok(_) => {
                let mut claimed = item.clone();
                claimed.lease_owner = Some(self.worker.clone());
                claimed.lease_expires_at = Some(expires);
                claimed.version += 1;
                Ok(claimed)
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                let current = self.load(&item.request_id).await?;
                Err(JobError::Conflict(
                    match current.and_then(|c| c.lease_owner.zip(c.lease_expires_at)) {
                        Some((owner, until)) if until >= now && owner != self.worker => {
                            format!("leased by {owner} for {} more s", until - now)
                        }
                        _ => "changed while being claimed".into(),
                    },
                ))
            }
            Err(e) => Err(AwsError::from_sdk("dynamodb", "UpdateItem", e).into()),
        }
    }

    /// Extends this worker's lease; a [`JobError::Conflict`] means it was lost.
    pub async fn renew(&self, request_id: &str, lease: Duration) -> Result<(), JobError> {
        let expires = epoch_secs(SystemTime::now()) + lease.as_secs().max(1);
        self.update_own_lease(request_id, "SET lease_expires_at = :exp", Some(expires))
            .await
    }

    /// Gives the lease up, so a redelivery can be taken at once.
    pub async fn release(&self, request_id: &str) -> Result<(), JobError> {
        self.update_own_lease(request_id, "REMOVE lease_owner, lease_expires_at", None)
            .await
    }

    async fn update_own_lease(
        &self,
        request_id: &str,
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
            .expression_attribute_values(":me", s(&self.worker));
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
                    "the lease on {request_id} is no longer held by {}",
                    self.worker
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
