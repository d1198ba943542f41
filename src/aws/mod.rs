//! AWS clients built from the standard credential chain with per-service endpoint overrides,
//! and (`error.rs`) the one classifier that decides whether an AWS SDK error is worth retrying.

use std::time::Duration;

use crate::config::Settings;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;

mod error;

pub use error::{AwsError, AwsResultExt};

/// How long a TCP (and TLS) connection to an AWS endpoint may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How much longer than its wait a ReceiveMessage attempt may take: the answer of a long poll
/// arrives at the end of the wait, plus network and service time.
pub const LONG_POLL_SLACK: Duration = Duration::from_secs(15);

/// Every client the daemon uses, sharing one SDK configuration.
#[derive(Clone, Debug)]
pub struct Clients {
    pub sdk: aws_config::SdkConfig,
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sesv2: aws_sdk_sesv2::Client,
    pub redshift: aws_sdk_redshiftdata::Client,
    /// For completion events to SNS topics.
    pub sns: aws_sdk_sns::Client,
    /// What presigned links are signed with: the SDK configuration's credentials, kept (one
    /// cache for every copy of the clients).
    pub signing: std::sync::Arc<crate::presign::SigningCredentials>,
}

impl Clients {
    /// Every client counts its API attempts in `metrics`.
    pub async fn new(all: &Settings, metrics: &crate::metrics::Metrics) -> Clients {
        let settings = &all.aws;
        let counted = CallMetrics {
            requests: metrics.aws_requests.clone(),
            denied: metrics.aws_denied.clone(),
        };
        // The SDK's own retries, under ours: see `crate::retry` for how the two stack.
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(crate::retry::SDK_MAX_ATTEMPTS),
        );
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let timeouts = Timeouts::new(all);
        loader = loader.timeout_config(timeouts.api.clone());
        let sdk = loader.load().await;
        let e = &settings.endpoints;
        // Stalled-stream protection watches a body's rate with a timer while it is read. Only
        // S3 streams bodies; every other answer is read whole within the attempt's deadline,
        // so the watch would only cost a timer per call.
        let whole = || StalledStreamProtectionConfig::disabled();

        let mut sqs = aws_sdk_sqs::config::Builder::from(&sdk)
            .timeout_config(timeouts.sqs)
            .stalled_stream_protection(whole());
        if let Some(url) = &e.sqs {
            sqs = sqs.endpoint_url(url);
        }
        let mut s3 = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(settings.s3_force_path_style)
            .timeout_config(timeouts.s3);
        if let Some(url) = &e.s3 {
            s3 = s3.endpoint_url(url);
        }
        let mut dynamodb =
            aws_sdk_dynamodb::config::Builder::from(&sdk).stalled_stream_protection(whole());
        if let Some(url) = &e.dynamodb {
            dynamodb = dynamodb.endpoint_url(url);
        }
        let mut sesv2 =
            aws_sdk_sesv2::config::Builder::from(&sdk).stalled_stream_protection(whole());
        if let Some(url) = &e.sesv2 {
            sesv2 = sesv2.endpoint_url(url);
        }
        let mut sns = aws_sdk_sns::config::Builder::from(&sdk).stalled_stream_protection(whole());
        if let Some(url) = &e.sns {
            sns = sns.endpoint_url(url);
        }
        let mut redshift =
            aws_sdk_redshiftdata::config::Builder::from(&sdk).stalled_stream_protection(whole());
        if let Some(url) = &e.redshift_data {
            redshift = redshift.endpoint_url(url);
        }
        Clients {
            sqs: aws_sdk_sqs::Client::from_conf(sqs.interceptor(counted.clone()).build()),
            s3: aws_sdk_s3::Client::from_conf(s3.interceptor(counted.clone()).build()),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(
                dynamodb.interceptor(counted.clone()).build(),
            ),
            sesv2: aws_sdk_sesv2::Client::from_conf(sesv2.interceptor(counted.clone()).build()),
            sns: aws_sdk_sns::Client::from_conf(sns.interceptor(counted.clone()).build()),
            redshift: aws_sdk_redshiftdata::Client::from_conf(
                redshift.interceptor(counted).build(),
            ),
            signing: std::sync::Arc::new(crate::presign::SigningCredentials::new(
                sdk.credentials_provider(),
            )),
            sdk,
        }
    }
}

/// How long the clients' calls may take. Each attempt that gets no answer in time fails as a
/// timeout, which the SDK retries and [`AwsError`] classifies as transient: a service that takes
/// a request and never answers costs the job a few attempts, never its life.
#[derive(Debug, Clone)]
struct Timeouts {
    /// DynamoDB, the Data API, SES, SNS: the whole attempt, answer included.
    api: TimeoutConfig,
    /// SQS: as `api`, but a long poll's answer comes at the end of its wait.
    sqs: TimeoutConfig,
    /// S3: from sending the request to the first byte of the answer, which for an upload
    /// includes sending the part, so one second more per MiB of part. Not the whole attempt: a
    /// download streams on after it, and CompleteMultipartUpload answers at once and keeps the
    /// connection alive while S3 assembles the object; a body that stops moving is the SDK's
    /// stalled-stream protection's to end.
    s3: TimeoutConfig,
}

impl Timeouts {
    fn new(settings: &Settings) -> Timeouts {
        let attempt = Duration::from_secs(settings.aws.attempt_timeout_secs);
        let long_poll = Duration::from_secs(u64::from(settings.queue.wait_secs)) + LONG_POLL_SLACK;
        let part = Duration::from_secs(u64::from(settings.archive.part_size_mib));
        let builder = || TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT);
        Timeouts {
            api: builder().operation_attempt_timeout(attempt).build(),
            sqs: builder()
                .operation_attempt_timeout(attempt.max(long_poll))
                .build(),
            s3: builder().read_timeout(attempt + part).build(),
        }
    }
}

/// Counts every API attempt by service, operation and outcome (ok, denied, client_error,
/// server_error, no_response); an SDK interceptor sees the SDK's own retries too, which the
/// callers do not.
#[derive(Debug, Clone)]
struct CallMetrics {
    requests: prometheus::IntCounterVec,
    denied: prometheus::IntCounter,
}

impl aws_sdk_s3::config::Intercept for CallMetrics {
    fn name(&self) -> &'static str {
        "CallMetrics"
    }

    fn read_after_attempt(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef<'_>,
        _components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        // Presigning runs the orchestrator up to signing and stops before anything is sent:
        // neither a response nor an outcome, and no request to count.
        if context.response().is_none() && context.output_or_error().is_none() {
            return Ok(());
        }
        let metadata = cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>();
        let (service, operation) =
            metadata.map_or(("unknown", "unknown"), |m| (m.service(), m.name()));
        let outcome = match context.response() {
            None => "no_response",
            Some(r) if r.status().is_success() => "ok",
            Some(r)
                if denied(
                    r.status().as_u16(),
                    r.headers().get("x-amzn-ErrorType"),
                    r.body().bytes(),
                ) =>
            {
                "denied"
            }
            Some(r) if r.status().is_client_error() => "client_error",
            Some(_) => "server_error",
        };
        self.requests
            .with_label_values(&[service, operation, outcome])
            .inc();
        if outcome == "denied" {
            self.denied.inc();
        }
        Ok(())
    }
}

/// Whether an answer refuses the call for want of permission: S3 says so with 403, the JSON
/// protocols (DynamoDB, SQS, the Data API, SES v2) with an `AccessDenied…` error type in a
/// header or in the body (in memory by the time an error is read).
fn denied(status: u16, error_type: Option<&str>, body: Option<&[u8]>) -> bool {
    const ACCESS_DENIED: &[u8] = b"AccessDenied";
    status == 403
        || error_type.is_some_and(|t| t.contains("AccessDenied"))
        || (400..500).contains(&status)
            && body.is_some_and(|b| b.windows(ACCESS_DENIED.len()).any(|w| w == ACCESS_DENIED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_has_a_deadline_long_polls_and_part_uploads_get_theirs() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        let mut settings = Settings::load(&path).unwrap();
        settings.aws.attempt_timeout_secs = 10;
        settings.queue.wait_secs = 20;
        settings.archive.part_size_mib = 64;
        let t = Timeouts::new(&settings);
        assert_eq!(
            t.api.operation_attempt_timeout(),
            Some(Duration::from_secs(10))
        );
        // A 20 s long poll answers after its wait.
        assert_eq!(
            t.sqs.operation_attempt_timeout(),
            Some(Duration::from_secs(35))
        );
        // S3: to the answer's first byte, sending a 64 MiB part included; no attempt deadline,
        // which would cut a download streaming on.
        assert_eq!(t.s3.read_timeout(), Some(Duration::from_secs(74)));
        assert_eq!(t.s3.operation_attempt_timeout(), None);
        for config in [&t.api, &t.sqs, &t.s3] {
            assert_eq!(config.connect_timeout(), Some(CONNECT_TIMEOUT));
        }
        settings.aws.attempt_timeout_secs = 60;
        assert_eq!(
            Timeouts::new(&settings).sqs.operation_attempt_timeout(),
            Some(Duration::from_secs(60))
        );
    }

    #[tokio::test]
    async fn only_s3_watches_its_answers_for_stalls() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        let mut settings = Settings::load(&path).unwrap();
        // Nothing is called: the region is set so that none is looked up.
        settings.aws.region = Some("us-east-1".into());
        let c = Clients::new(&settings, &crate::metrics::Metrics::new()).await;
        // Unset is the SDK's default for this behaviour version: watched.
        let watched = |config: Option<&StalledStreamProtectionConfig>| {
            config.is_none_or(StalledStreamProtectionConfig::is_enabled)
        };
        assert!(watched(c.s3.config().stalled_stream_protection()));
        assert!(!watched(c.sqs.config().stalled_stream_protection()));
        assert!(!watched(c.dynamodb.config().stalled_stream_protection()));
        assert!(!watched(c.sesv2.config().stalled_stream_protection()));
        assert!(!watched(c.sns.config().stalled_stream_protection()));
        assert!(!watched(c.redshift.config().stalled_stream_protection()));
    }

    #[test]
    fn access_denied_is_told_apart_from_other_refusals() {
        assert!(denied(403, None, None));
        assert!(denied(
            400,
            Some("AccessDeniedException:http://internal.amazon.com/"),
            None
        ));
        let body = br#"{"__type":"com.amazonaws.dynamodb.v20120810#AccessDeniedException"}"#;
        assert!(denied(400, None, Some(body)));
        assert!(!denied(400, Some("ValidationException"), Some(b"{}")));
        assert!(!denied(500, None, Some(b"AccessDenied")));
    }
}
