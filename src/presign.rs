//! Presigned GET links for archives. The link is a bearer credential: it is
//! returned to the caller for the email and never logged or stored. Its real lifetime is the
//! requested one capped by the signing credentials' own expiry, and that is what is reported.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{
    ProvideCredentials, SharedCredentialsProvider, error::CredentialsError,
};
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
        &svc.clients.signing,
        &s.archive.bucket,
        key,
        &format!("{request_id}.zip"),
        Duration::from_secs(s.presign.expiry_secs),
    )
    .await
}

/// The most SigV4 allows.
pub const MAX_EXPIRY: Duration = Duration::from_secs(604_800);

/// Signs a GET of `bucket/key` that downloads as `filename`, with credentials from
/// `credentials` used for this signature only: the link's lifetime is capped by the expiry
/// of exactly the credentials that sign it (temporary credentials — IRSA, SSO, an instance
/// role — end the link when they end).
pub async fn presign(
    s3: &aws_sdk_s3::Client,
    credentials: &SigningCredentials,
    bucket: &str,
    key: &str,
    filename: &str,
    requested: Duration,
) -> Result<Link, JobError> {
    let requested = requested.min(MAX_EXPIRY);
    let now = SystemTime::now();
    let mut expires_at = now + requested;
    let mut signing = None;
    if let Some(creds) = credentials
        .get(now)
        .await
        .map_err(|e| AwsError::from_credentials("s3", "presign", &e))?
    {
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

/// How long credentials without an expiry (long-lived keys) are kept before the chain is
/// asked again — as the SDK's clients keep them, so a rotated key is picked up as soon.
const UNEXPIRING_KEPT: Duration = Duration::from_secs(15 * 60);

/// The credentials links are signed with: the daemon's AWS chain, asked once and asked again
/// only when half the lifetime the credentials had when fetched has passed. The chain itself
/// caches nothing (the SDK's clients cache in front of it), so without this every link would
/// cost a call to STS (IRSA), the instance metadata service or the profile files; with it,
/// every link still lasts at least half as long as fresh credentials would allow.
#[derive(Debug)]
pub struct SigningCredentials {
    provider: Option<SharedCredentialsProvider>,
    /// The credentials and when they were fetched; the lock makes concurrent signers wait for
    /// one fetch instead of each making their own.
    cached: tokio::sync::Mutex<Option<(Credentials, SystemTime)>>,
}

impl SigningCredentials {
    /// No provider: links are signed anonymously (the SDK's configuration has none).
    pub fn new(provider: Option<SharedCredentialsProvider>) -> SigningCredentials {
        SigningCredentials {
            provider,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// The credentials to sign with at `now`, fetched again once they are past their middle.
    async fn get(&self, now: SystemTime) -> Result<Option<Credentials>, CredentialsError> {
        let Some(provider) = &self.provider else {
            return Ok(None);
        };
        let mut cached = self.cached.lock().await;
        if let Some((creds, fetched)) = cached.as_ref()
            && usable(creds.expiry(), *fetched, now)
        {
            return Ok(Some(creds.clone()));
        }
        let creds = provider.provide_credentials().await?;
        *cached = Some((creds.clone(), now));
        Ok(Some(creds))
    }
}

/// Whether credentials fetched at `fetched` and expiring at `expiry` still have at least half
/// the lifetime they had then (or, without an expiry, were fetched under
/// [`UNEXPIRING_KEPT`] ago).
fn usable(expiry: Option<SystemTime>, fetched: SystemTime, now: SystemTime) -> bool {
    let age = now.duration_since(fetched).unwrap_or_default();
    match expiry {
        None => age < UNEXPIRING_KEPT,
        Some(expiry) => {
            let lifetime = expiry.duration_since(fetched).unwrap_or_default();
            let left = expiry.duration_since(now).unwrap_or_default();
            left > Duration::ZERO && left >= lifetime / 2
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_credential_types::provider::future;

    use super::*;

    /// Hands out credentials expiring `lifetime` after the clock given, counting the calls.
    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicUsize>,
        lifetime: Option<Duration>,
        clock: SystemTime,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            future::ProvideCredentials::ready(Ok(Credentials::new(
                format!("AKID{n}"),
                "secret",
                None,
                self.lifetime.map(|l| self.clock + l),
                "counting",
            )))
        }
    }

    fn signing(
        lifetime: Option<Duration>,
        clock: SystemTime,
    ) -> (SigningCredentials, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let provider = Counting {
            calls: calls.clone(),
            lifetime,
            clock,
        };
        (
            SigningCredentials::new(Some(SharedCredentialsProvider::new(provider))),
            calls,
        )
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn temporary_credentials_are_fetched_again_past_half_their_lifetime() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (s, calls) = signing(Some(HOUR), t0);
        for minutes in [0, 1, 10, 29] {
            let creds = s.get(t0 + Duration::from_secs(minutes * 60)).await;
            assert_eq!(
                creds
                    .ok()
                    .flatten()
                    .map(|c| c.access_key_id().to_owned())
                    .as_deref(),
                Some("AKID0")
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one fetch for many links");
        let later = s.get(t0 + Duration::from_secs(31 * 60)).await;
        assert_eq!(
            later
                .ok()
                .flatten()
                .map(|c| c.access_key_id().to_owned())
                .as_deref(),
            Some("AKID1")
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "fetched again past the middle"
        );
    }

    #[tokio::test]
    async fn long_lived_keys_are_asked_for_again_after_fifteen_minutes() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (s, calls) = signing(None, t0);
        assert!(s.get(t0).await.is_ok());
        assert!(s.get(t0 + Duration::from_secs(14 * 60)).await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(s.get(t0 + Duration::from_secs(16 * 60)).await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn expired_or_backdated_credentials_are_not_used() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert!(usable(Some(t0 + HOUR), t0, t0));
        assert!(!usable(Some(t0 + HOUR), t0, t0 + HOUR));
        assert!(!usable(Some(t0 + HOUR), t0, t0 + 2 * HOUR));
        // Already expired when fetched.
        assert!(!usable(Some(t0), t0, t0));
        // The clock went back: still within the lifetime.
        assert!(usable(Some(t0 + HOUR), t0 + Duration::from_secs(60), t0));
    }

    #[tokio::test]
    async fn without_a_provider_links_are_unsigned() {
        let s = SigningCredentials::new(None);
        assert!(matches!(s.get(SystemTime::now()).await, Ok(None)));
    }
}
