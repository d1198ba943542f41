//! The one classifier that decides whether an AWS call's failure is worth retrying.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// A failed AWS call, classified.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{service} {operation} failed: {}", crate::error::redact(.detail))]
pub struct AwsError {
    pub service: &'static str,
    pub operation: &'static str,
    /// The service's error code, when it answered.
    pub code: Option<String>,
    pub detail: String,
    pub transient: bool,
}

/// Error codes that mean "slow down" or "try again"; the SDK already retried them a few times.
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalServerError",
    "InternalServerException",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "ActiveStatementsExceededException",
    "ActiveSessionsExceededException",
    "KMS.ThrottlingException",
];

impl AwsError {
    /// Classifies an SDK error: no response or a broken one, throttling, timeouts and 5xx are
    /// transient; everything the service rejected on its merits is permanent.
    pub fn from_sdk<E>(
        service: &'static str,
        operation: &'static str,
        err: SdkError<E, HttpResponse>,
    ) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let (code, transient) = match &err {
            SdkError::ConstructionFailure(_) => (None, false),
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => (None, true),
            SdkError::ServiceError(se) => {
                let code = se.err().code().map(str::to_string);
                let server_error = se.raw().status().is_server_error();
                let transient = server_error
                    || code
                        .as_deref()
                        .is_some_and(|c| TRANSIENT_CODES.contains(&c));
                (code, transient)
            }
            _ => (None, true),
        };
        // A service's answer is told as code, status and message; anything else (no answer,
        // a broken one) with its whole cause chain.
        let detail = match &err {
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                match se.err().message() {
                    Some(message) => format!(
                        "{} (HTTP {status}): {message}",
                        code.as_deref().unwrap_or("error")
                    ),
                    None => format!("{} (HTTP {status})", code.as_deref().unwrap_or("error")),
                }
            }
            _ => aws_sdk_s3::error::DisplayErrorContext(&err).to_string(),
        };
        AwsError {
            service,
            operation,
            code,
            detail,
            transient,
        }
    }

    /// A call that got no answer, or one that broke off (a body that stopped streaming, a
    /// task that did not finish): transient, like every failure without a service's verdict.
    pub fn unanswered(
        service: &'static str,
        operation: &'static str,
        detail: impl std::fmt::Display,
    ) -> AwsError {
        AwsError {
            service,
            operation,
            code: None,
            detail: detail.to_string(),
            transient: true,
        }
    }

    /// The credentials chain failed. Only a configuration it cannot use is permanent; a
    /// provider that did not answer, timed out or had nothing yet (instance metadata, a web
    /// identity token being rotated) can succeed on the next try.
    pub fn from_credentials(
        service: &'static str,
        operation: &'static str,
        err: &aws_credential_types::provider::error::CredentialsError,
    ) -> AwsError {
        use aws_credential_types::provider::error::CredentialsError;
        let transient = !matches!(err, CredentialsError::InvalidConfiguration(_));
        AwsError {
            service,
            operation,
            code: Some("CredentialsUnavailable".into()),
            detail: format!(
                "no AWS credentials: {}",
                aws_sdk_s3::error::DisplayErrorContext(err)
            ),
            transient,
        }
    }

    pub fn code_is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// Whether an SQS call failed because its receipt handle no longer refers to a message
    /// this worker holds: the message was deleted or delivered to someone else.
    pub fn receipt_gone(&self) -> bool {
        self.service == "sqs" && RECEIPT_GONE.iter().any(|code| self.code_is(code))
    }
}

/// The codes SQS gives ChangeMessageVisibility and DeleteMessage for a receipt handle that no
/// longer refers to an in-flight message.
const RECEIPT_GONE: &[&str] = &[
    "ReceiptHandleIsInvalid",
    "InvalidParameterValue",
    "MessageNotInflight",
    "AWS.SimpleQueueService.MessageNotInflight",
];

/// Maps an SDK result into a classified error.
pub trait AwsResultExt<T> {
    fn aws(self, service: &'static str, operation: &'static str) -> Result<T, AwsError>;
}

impl<T, E> AwsResultExt<T> for Result<T, SdkError<E, HttpResponse>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    fn aws(self, service: &'static str, operation: &'static str) -> Result<T, AwsError> {
        self.map_err(|e| AwsError::from_sdk(service, operation, e))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use aws_credential_types::provider::error::CredentialsError;

    #[test]
    fn only_an_unusable_credentials_configuration_is_permanent() {
        let passing = [
            CredentialsError::provider_timed_out(Duration::from_secs(5)),
            CredentialsError::not_loaded("the web identity token is being rotated"),
            CredentialsError::provider_error("instance metadata answered 500"),
        ];
        for e in &passing {
            assert!(
                AwsError::from_credentials("s3", "presign", e).transient,
                "{e}"
            );
        }
        let broken = CredentialsError::invalid_configuration("no such profile");
        let e = AwsError::from_credentials("s3", "presign", &broken);
        assert!(!e.transient);
        assert!(e.to_string().contains("no AWS credentials"), "{e}");
    }

    #[test]
    fn receipts_are_gone_only_for_sqs_codes_that_say_so() {
        let gone = |service, code: &str| AwsError {
            service,
            operation: "ChangeMessageVisibility",
            code: Some(code.into()),
            detail: String::new(),
            transient: false,
        };
        assert!(gone("sqs", "ReceiptHandleIsInvalid").receipt_gone());
        assert!(gone("sqs", "AWS.SimpleQueueService.MessageNotInflight").receipt_gone());
        assert!(!gone("sqs", "AccessDenied").receipt_gone());
        assert!(!gone("s3", "InvalidParameterValue").receipt_gone());
        assert!(!AwsError::unanswered("sqs", "ChangeMessageVisibility", "reset").receipt_gone());
    }
}
