//! The `[aws]` settings: region, endpoint overrides and how long a call may take.

use serde::Deserialize;

/// Region, endpoint overrides and call timeouts; credentials always come from the standard
/// AWS chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSettings {
    /// Overrides the region of the AWS chain (AWS_REGION, profile, instance metadata).
    pub region: Option<String>,
    /// Per-service endpoint overrides (local stacks). They take precedence over
    /// AWS_ENDPOINT_URL_<SERVICE>.
    pub endpoints: Endpoints,
    /// Path-style S3 addressing (`host/bucket/key`), needed by moto and MinIO.
    pub s3_force_path_style: bool,
    /// How long one attempt of an AWS call may wait for its answer before it is abandoned and
    /// retried (1–3600 s). Without it a service that takes a request and never answers would
    /// hold the job, and with it the request, for ever. S3 calls get one second more per MiB
    /// of multipart part (the time to send the part counts); SQS long polls their wait more.
    pub attempt_timeout_secs: u64,
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings {
            region: None,
            endpoints: Endpoints::default(),
            s3_force_path_style: false,
            attempt_timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Endpoints {
    pub sqs: Option<String>,
    pub s3: Option<String>,
    pub dynamodb: Option<String>,
    pub sesv2: Option<String>,
    pub sns: Option<String>,
    pub redshift_data: Option<String>,
}
