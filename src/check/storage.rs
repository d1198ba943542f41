//! The probes of the buckets and of the links: each does what the worker does (a listing
//! under the upload prefix, an upload under the archive prefix, a presigned link), so a
//! permission the worker lacks shows here.

use std::time::Duration;

use super::Target;
use crate::aws::AwsResultExt;

/// The upload bucket: the worker lists and reads only under `upload.prefix` (the policy's
/// `s3:ListBucket` carries an `s3:prefix` condition), so that is what is probed.
pub(super) async fn upload_bucket(svc: &Target<'_>) -> Result<String, String> {
    let u = &svc.settings.upload;
    let prefix = format!("{}/", u.prefix.trim_end_matches('/'));
    svc.clients
        .s3
        .list_objects_v2()
        .bucket(&u.bucket)
        .prefix(&prefix)
        .max_keys(1)
        .send()
        .await
        .aws("s3", "ListObjectsV2")
        .map(|_| format!("listable under {prefix}"))
        .map_err(|e| {
            format!(
                "{e} — create bucket {} or fix upload.bucket; the worker needs s3:ListBucket on {prefix}",
                u.bucket
            )
        })
}

/// The archive bucket: an upload under `archive.prefix` is started and aborted, as the worker
/// starts every archive.
pub(super) async fn archive_bucket(svc: &Target<'_>) -> Result<String, String> {
    let a = &svc.settings.archive;
    let probe =
        crate::message::RequestId::parse(&format!("check-{}", uuid::Uuid::new_v4().simple()))
            .map_err(|e| e.to_string())?;
    let key = crate::archive::Archiver::new(svc.clients.s3.clone(), a.clone(), String::new())
        .archive_key(&probe);
    let fail = |e: crate::aws::AwsError| {
        format!(
            "{e} — create bucket {} or fix archive.bucket; the worker needs s3:PutObject and s3:AbortMultipartUpload on {}",
            a.bucket, key
        )
    };
    let started = svc
        .clients
        .s3
        .create_multipart_upload()
        .bucket(&a.bucket)
        .key(&key)
        .send()
        .await
        .aws("s3", "CreateMultipartUpload")
        .map_err(fail)?;
    svc.clients
        .s3
        .abort_multipart_upload()
        .bucket(&a.bucket)
        .key(&key)
        .set_upload_id(started.upload_id)
        .send()
        .await
        .aws("s3", "AbortMultipartUpload")
        .map_err(fail)?;
    Ok(format!("an upload to {key} can be started"))
}

/// How long the links the worker emails will last: `presign.expiry_secs`, or less when the
/// credentials that sign them expire sooner (IRSA, SSO and instance roles give temporary ones).
pub(super) async fn links(svc: &Target<'_>) -> Result<String, String> {
    let s = svc.settings;
    let requested = Duration::from_secs(s.presign.expiry_secs).min(crate::presign::MAX_EXPIRY);
    let link = crate::presign::presign(
        &svc.clients.s3,
        &svc.clients.signing,
        &s.archive.bucket,
        "check.zip",
        "check.zip",
        requested,
    )
    .await
    .map_err(|e| format!("{e} — check the AWS credentials the worker runs with"))?;
    let lifetime = link
        .expires_at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    // A second or two pass between signing and this line.
    if lifetime + Duration::from_secs(60) >= requested {
        Ok(format!(
            "links last presign.expiry_secs ({} s)",
            requested.as_secs()
        ))
    } else {
        Ok(format!(
            "links last {} s, not presign.expiry_secs ({} s): the signing credentials expire first",
            lifetime.as_secs(),
            requested.as_secs()
        ))
    }
}
