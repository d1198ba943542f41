//! Presigned GET links for archives. The link is a bearer credential: it is
//! returned to the caller for the email and never logged or stored. Its real lifetime is the
//! requested one capped by the signing credentials' own expiry, and that is what is reported.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_s3::presigning::PresigningConfig;

use crate::aws::{AwsError, AwsResultExt};
use crate::error::JobError;

/// A presigned link and when it really stops working.
pub struct Link {
    pub url: String,
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("url", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A link to a request's archive under `key` in the archive bucket, downloading as
/// `<request_id>.zip`, for `presign.expiry_secs`: what the email, the event and `status` give.
pub async fn archive_link(
    svc: &crate::services::Services,
    key: &str,
    request_id: &str,
) -> Result<Link, JobError> {
    let s = &svc.settings;
    presign(
        &svc.clients.s3,
        svc.clients.sdk.credentials_provider().as_ref(),
        &s.archive.bucket,
        key,
        &format!("{request_id}.zip"),
        Duration::from_secs(s.presign.expiry_secs),
    )
    .await
}

/// The most SigV4 allows.
pub const MAX_EXPIRY: Duration = Duration::from_secs(604_800);

/// Signs a GET of `bucket/key` that downloads as `filename`, with credentials read from
/// `credentials` (the daemon's AWS chain) and used for this signature only: the link's
/// lifetime is capped by the expiry of exactly the credentials that sign it (temporary
/// credentials — IRSA, SSO, an instance role — end the link when they end).
pub async fn presign(
    s3: &aws_sdk_s3::Client,
    credentials: Option<&SharedCredentialsProvider>,
    bucket: &str,
    key: &str,
    filename: &str,
    requested: Duration,
) -> Result<Link, JobError> {
    let requested = requested.min(MAX_EXPIRY);
    let now = SystemTime::now();
    let mut expires_at = now + requested;
    let mut signing = None;
    if let Some(provider) = credentials {
        let creds = provider
            .provide_credentials()
            .await
            .map_err(|e| AwsError::from_credentials("s3", "presign", &e))?;
        if let Some(creds_expiry) = creds.expiry() {
            expires_at = expires_at.min(creds_expiry);
        }
        signing = Some(aws_sdk_s3::config::Builder::default().credentials_provider(creds));
    }
    let lifetime = expires_at
        .duration_since(now)
        .unwrap_or_default()
        .max(Duration::from_secs(1));
    let config = PresigningConfig::expires_in(lifetime)
        .map_err(|e| JobError::rejected("invalid_presign_expiry", e.to_string()))?;
    let mut request = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .response_content_disposition(format!("attachment; filename=\"{filename}\""))
        .response_content_type("application/zip")
        .customize();
    if let Some(signing) = signing {
        request = request.config_override(signing);
    }
    let request = request.presigned(config).await.aws("s3", "presign")?;
    Ok(Link {
        url: request.uri().to_string(),
        expires_at,
    })
}
