//! Telling a conditional write that was made from one whose condition failed, once for
//! every DynamoDB write of the state store; any other failure is classified by
//! [`AwsError::from_sdk`].

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;

use crate::aws::AwsError;
use crate::error::JobError;

/// Whether a conditional write (UpdateItem, PutItem) was made: `Ok(false)` when its condition
/// failed; any other failure is classified.
pub(super) fn written<O, E>(
    operation: &'static str,
    result: Result<O, SdkError<E, HttpResponse>>,
) -> Result<bool, JobError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error().and_then(|se| se.code())
                == Some("ConditionalCheckFailedException") =>
        {
            Ok(false)
        }
        Err(e) => Err(AwsError::from_sdk("dynamodb", operation, e).into()),
    }
}

/// Whether a transaction was cancelled because a condition of one of its writes failed.
pub(super) fn is_condition_failure<R>(e: &SdkError<TransactWriteItemsError, R>) -> bool {
    e.as_service_error().is_some_and(|se| match se {
        TransactWriteItemsError::TransactionCanceledException(t) => t
            .cancellation_reasons()
            .iter()
            .any(|r| r.code() == Some("ConditionalCheckFailed")),
        _ => false,
    })
}
