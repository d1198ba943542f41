//! Writing the archive object with bounded memory. An archive smaller than one part goes up
//! with one PutObject; a larger one by multipart upload, one part filling while up to
//! `archive.uploads_in_flight` upload. The part size grows with the archive ([`part_size`]), so
//! an archive never runs out of S3's 10,000 parts before it reaches [`capacity`].
//!
//! Bodies go up with `UNSIGNED-PAYLOAD`: SigV4 would hash every byte with SHA-256 once more
//! (the archive's own digest is one pass already), while the SDK's CRC-32 checksum, which S3
//! verifies before it stores a part, still travels with each one, and TLS protects the rest.

use std::collections::VecDeque;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption as Sse};
use bytes::Bytes;
use tokio::task::JoinHandle;

use crate::aws::{AwsError, AwsResultExt};
use crate::config::{ArchiveSettings, ServerSideEncryption};
use crate::error::JobError;

/// An upload in flight; it hands its body back for the next part.
type PartUpload = JoinHandle<Result<(CompletedPart, Bytes), AwsError>>;

const MIB: u64 = 1024 * 1024;
/// S3's most parts in one upload.
pub const MAX_PARTS: u64 = 10_000;
/// S3's largest part.
const MAX_PART_BYTES: u64 = 5 * 1024 * MIB;
/// The part size doubles after every this many parts.
const PARTS_PER_SIZE: u64 = 1_000;

/// The size of part `number` (from 1) when the first parts are `base` bytes: `base` for the
/// first 1,000 parts, doubling every 1,000 parts after, capped at S3's 5 GiB. Small archives
/// keep small parts (and little memory); with 8 MiB parts the 10,000 parts hold about 8 TiB
/// instead of 78 GiB.
pub fn part_size(base: u64, number: u64) -> u64 {
    let doublings = u32::try_from(number.saturating_sub(1) / PARTS_PER_SIZE).unwrap_or(u32::MAX);
    base.checked_shl(doublings)
        .unwrap_or(MAX_PART_BYTES)
        .min(MAX_PART_BYTES)
}

/// The largest archive [`MAX_PARTS`] parts of the [`part_size`] schedule hold.
pub fn capacity(base: u64) -> u64 {
    (0..MAX_PARTS / PARTS_PER_SIZE)
        .map(|tier| part_size(base, tier * PARTS_PER_SIZE + 1).saturating_mul(PARTS_PER_SIZE))
        .fold(0, u64::saturating_add)
}

/// Sets the archive's content type, disposition and encryption on a PutObject or
/// CreateMultipartUpload request builder (two types with the same setters).
macro_rules! object_attributes {
    ($req:expr, $sink:expr) => {{
        let req = $req
            .bucket(&$sink.bucket)
            .key(&$sink.key)
            .content_type("application/zip")
            .content_disposition(format!("attachment; filename=\"{}\"", $sink.filename));
        match $sink.encryption {
            ServerSideEncryption::None => req,
            ServerSideEncryption::Aes256 => req.server_side_encryption(Sse::Aes256),
            ServerSideEncryption::Kms => req
                .server_side_encryption(Sse::AwsKms)
                .set_ssekms_key_id($sink.kms_key_id.clone()),
        }
    }};
}

/// The archive object being written.
pub struct MultipartSink {
    client: Client,
    bucket: String,
    key: String,
    filename: String,
    encryption: ServerSideEncryption,
    kms_key_id: Option<String>,
    /// Set once the first part is full and a multipart upload was started.
    upload_id: Option<String>,
    /// The first parts' size; later parts grow ([`part_size`]).
    base_part_size: u64,
    /// The size of the part being filled.
    part_size: usize,
    buffer: Vec<u8>,
    /// Bodies of finished uploads, filled again rather than allocated anew: the allocator
    /// keeps part-sized blocks it was given back, so new ones would add up.
    spare: Vec<Vec<u8>>,
    in_flight: VecDeque<PartUpload>,
    max_in_flight: usize,
    parts: Vec<CompletedPart>,
    written: u64,
    /// SHA-256 of every byte written, in order: the archive's digest without reading it again.
    digest: sha2::Sha256,
}

/// A completed archive object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub bytes: u64,
    /// SHA-256 of the object, lowercase hex.
    pub sha256: String,
}

impl MultipartSink {
    /// An archive object under `key`; nothing is sent until a part is full or it finishes.
    pub fn start(client: Client, settings: &ArchiveSettings, key: String, filename: &str) -> Self {
        let base_part_size = u64::from(settings.part_size_mib) * MIB;
        let part_size = usize::try_from(base_part_size).unwrap_or(usize::MAX);
        MultipartSink {
            client,
            bucket: settings.bucket.clone(),
            key,
            filename: filename.to_string(),
            encryption: settings.server_side_encryption,
            kms_key_id: settings.kms_key_id.clone(),
            upload_id: None,
            base_part_size,
            part_size,
            buffer: Vec::new(),
            spare: Vec::new(),
            in_flight: VecDeque::new(),
            max_in_flight: settings.uploads_in_flight.max(1) as usize,
            parts: Vec::new(),
            written: 0,
            digest: sha2::Sha256::default(),
        }
    }

    /// Takes the bytes in `data` (leaving it empty); uploads whole parts as they fill. The
    /// buffer never grows past one part and the bodies are reused, so memory stays at
    /// `uploads_in_flight + 1` parts of the current size.
    pub async fn write(&mut self, data: &mut Vec<u8>) -> Result<(), JobError> {
        self.written += data.len() as u64;
        sha2::Digest::update(&mut self.digest, data.as_slice());
        let mut input = data.as_slice();
        while !input.is_empty() {
            let take = (self.part_size - self.buffer.len()).min(input.len());
            // The first part's buffer grows with the archive (doubling, never past a part),
            // so a small archive does not map and unmap a whole part's worth of memory.
            let len = self.buffer.len();
            if self.buffer.capacity() - len < take {
                let want = (self.buffer.capacity() * 2)
                    .max(len + take)
                    .min(self.part_size);
                self.buffer.reserve_exact(want - len);
            }
            self.buffer.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.buffer.len() == self.part_size {
                let mut next = self.spare.pop().unwrap_or_default();
                next.clear();
                next.reserve(self.part_size);
                let part = std::mem::replace(&mut self.buffer, next);
                self.upload(part).await?;
            }
        }
        data.clear();
        Ok(())
    }

    /// Waits for the oldest upload in flight.
    async fn wait_one(&mut self) -> Result<(), AwsError> {
        if let Some(task) = self.in_flight.pop_front() {
            let (part, body) = task.await.map_err(|e| {
                AwsError::unanswered("s3", "UploadPart", format!("the upload task ended: {e}"))
            })??;
            self.parts.push(part);
            if let Ok(body) = body.try_into_mut() {
                self.spare.push(body.into());
            }
        }
        Ok(())
    }

    async fn upload_id(&mut self) -> Result<String, AwsError> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let out = object_attributes!(self.client.create_multipart_upload(), self)
            .send()
            .await
            .aws("s3", "CreateMultipartUpload")?;
        let id = out.upload_id.unwrap_or_default();
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    async fn upload(&mut self, body: Vec<u8>) -> Result<(), JobError> {
        let upload_id = self.upload_id().await?;
        while self.in_flight.len() >= self.max_in_flight {
            self.wait_one().await?;
        }
        let number = (self.parts.len() + self.in_flight.len()) as u64 + 1;
        if number > MAX_PARTS {
            // Unreachable within archive.max_uncompressed_bytes, which validation holds below
            // the schedule's capacity; refused rather than failed by S3 at completion.
            return Err(JobError::rejected(
                "export_too_large",
                format!(
                    "the archive outgrew S3's {MAX_PARTS} parts ({} bytes written)",
                    self.written
                ),
            ));
        }
        let next = part_size(self.base_part_size, number + 1);
        self.part_size = usize::try_from(next).unwrap_or(usize::MAX);
        let number = i32::try_from(number).unwrap_or(i32::MAX);
        let body = Bytes::from(body);
        let req = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(body.clone()));
        self.in_flight.push_back(tokio::spawn(async move {
            let out = req
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .aws("s3", "UploadPart")?;
            let part = CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag)
                .build();
            Ok((part, body))
        }));
        Ok(())
    }

    /// Uploads what is left and completes the object; returns its size and digest.
    pub async fn finish(mut self) -> Result<Written, JobError> {
        let digest = std::mem::take(&mut self.digest);
        let sha256 = sha2::Digest::finalize(digest)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let bytes = self.complete().await?;
        Ok(Written { bytes, sha256 })
    }

    /// Uploads what is left and completes the object; returns its size. An archive that never
    /// filled a part goes up in one PutObject (idempotent: a retry writes the same bytes).
    async fn complete(mut self) -> Result<u64, JobError> {
        let last = std::mem::take(&mut self.buffer);
        let Some(upload_id) = self.upload_id.clone() else {
            return self.put(last).await;
        };
        if !last.is_empty() {
            self.upload(last).await?;
        }
        while !self.in_flight.is_empty() {
            self.wait_one().await?;
        }
        let completed = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(self.parts.clone()))
                    .build(),
            )
            .send()
            .await
            .aws("s3", "CompleteMultipartUpload");
        match completed {
            Ok(_) => Ok(self.written),
            // A retry after a lost response finds the upload gone (NoSuchUpload): the object
            // is there if the first try completed it. Checked by size and multipart ETag.
            Err(e) if self.completed_already().await => {
                tracing::info!(archive_key = %self.key, error = %e, "the archive upload had completed; its response was lost");
                Ok(self.written)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The whole archive in one PutObject. A retry after a lost response writes the same
    /// bytes again; when every try's response is lost, the object is recognised by size and
    /// ETag (the MD5 of the body, for objects not encrypted with KMS).
    async fn put(self, body: Vec<u8>) -> Result<u64, JobError> {
        let md5 = md5_hex(&body);
        let put = object_attributes!(self.client.put_object(), self)
            .body(ByteStream::from(body))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .aws("s3", "PutObject");
        match put {
            Ok(_) => Ok(self.written),
            Err(e) if self.is_there(&md5).await => {
                tracing::info!(archive_key = %self.key, error = %e, "the archive had been written; the response was lost");
                Ok(self.written)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the object under the key is exactly this upload: the same size and the ETag
    /// S3 gives a multipart object (MD5 of the parts' MD5s, then `-` and the part count).
    async fn completed_already(&self) -> bool {
        match multipart_etag(&self.parts) {
            Some(expected) => self.is_there(&expected).await,
            None => false,
        }
    }

    /// Whether the object under the key has this archive's size and `etag`.
    async fn is_there(&self, etag: &str) -> bool {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await
            .aws("s3", "HeadObject");
        head.is_ok_and(|h| {
            h.content_length() == i64::try_from(self.written).ok()
                && h.e_tag().map(|t| t.trim_matches('"')) == Some(etag)
        })
    }

    /// Abandons the upload and frees its parts (nothing to do before a part was full).
    pub async fn abort(mut self) {
        for task in self.in_flight.drain(..) {
            let _ = task.await;
        }
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        let result = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .send()
            .await
            .aws("s3", "AbortMultipartUpload");
        if let Err(e) = result {
            tracing::warn!(archive_key = %self.key, error = %e, "abort of the archive upload failed");
        }
    }
}

/// The ETag S3 gives an object completed from `parts`, or None when a part's ETag is not a
/// plain MD5 (e.g. with SSE-KMS, where ETags are not MD5s and the check cannot be made).
fn multipart_etag(parts: &[CompletedPart]) -> Option<String> {
    let mut md5s = Vec::with_capacity(parts.len() * 16);
    for part in parts {
        let hex = part.e_tag()?.trim_matches('"');
        if hex.len() != 32 {
            return None;
        }
        for i in (0..32).step_by(2) {
            md5s.push(u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()?);
        }
    }
    Some(format!("{}-{}", md5_hex(&md5s), parts.len()))
}

/// The MD5 of `data` in hex, as S3 gives it in a plain object's ETag.
fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_so_that_ten_thousand_hold_terabytes() {
        let base = 8 * MIB;
        assert_eq!(part_size(base, 1), base);
        assert_eq!(part_size(base, 1_000), base);
        assert_eq!(part_size(base, 1_001), 2 * base);
        assert_eq!(part_size(base, 10_000), 512 * base);
        assert_eq!(part_size(64 * MIB, 10_000), MAX_PART_BYTES);
        let sizes: Vec<u64> = (1..=MAX_PARTS).map(|n| part_size(base, n)).collect();
        assert!(sizes.windows(2).all(|w| w[0] <= w[1]));
        assert!(sizes.iter().all(|s| (5 * MIB..=MAX_PART_BYTES).contains(s)));
        // A fixed 8 MiB part held 78 GiB; the schedule holds the default 1 TiB cap many
        // times over, and about 5 TB even from the smallest part S3 allows.
        assert_eq!(capacity(base), sizes.iter().sum::<u64>());
        assert!(capacity(base) > 7 * (1 << 40));
        assert!(capacity(5 * MIB) > 5_000_000_000_000);
    }

    fn part(n: i32, etag: &str) -> CompletedPart {
        CompletedPart::builder().part_number(n).e_tag(etag).build()
    }

    #[test]
    fn multipart_etags_are_the_md5_of_the_part_md5s() {
        // Two parts whose bodies are "a" and "b": MD5s 0cc175b9… and 92eb5ffe…
        let parts = [
            part(1, "\"0cc175b9c0f1b6a831c399e269772661\""),
            part(2, "92eb5ffee6ae2fec3ad71c777531578f"),
        ];
        let mut both = Vec::new();
        both.extend_from_slice(&[
            0x0c, 0xc1, 0x75, 0xb9, 0xc0, 0xf1, 0xb6, 0xa8, 0x31, 0xc3, 0x99, 0xe2, 0x69, 0x77,
            0x26, 0x61,
        ]);
        both.extend_from_slice(&[
            0x92, 0xeb, 0x5f, 0xfe, 0xe6, 0xae, 0x2f, 0xec, 0x3a, 0xd7, 0x1c, 0x77, 0x75, 0x31,
            0x57, 0x8f,
        ]);
        use md5::Digest;
        let expected: String = md5::Md5::digest(&both)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(multipart_etag(&parts), Some(format!("{expected}-2")));
        assert_eq!(multipart_etag(&[part(1, "not-an-md5")]), None);
    }
}
