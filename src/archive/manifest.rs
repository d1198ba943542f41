//! The UNLOAD manifest: its entries (each must lie under the attempt's own prefix), its
//! record counts and its schema (the CSV header of the `single` layout).

use serde::Deserialize;

use super::{Archiver, stream_error};
use crate::aws::AwsError;
use crate::error::JobError;

#[derive(Debug, Deserialize)]
pub(super) struct Manifest {
    #[serde(default)]
    pub(super) entries: Vec<ManifestEntry>,
    pub(super) schema: Option<Schema>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ManifestEntry {
    pub(super) url: String,
    pub(super) meta: Option<EntryMeta>,
}

#[derive(Debug, Deserialize)]
pub(super) struct EntryMeta {
    pub(super) record_count: Option<u64>,
    /// The part's length in bytes (every manifest since 2023; not checked, only used to
    /// decide how to read the part).
    pub(super) content_length: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Schema {
    pub(super) elements: Vec<Element>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Element {
    pub(super) name: String,
}

/// Largest manifest read into memory: a manifest lists one line per part, so this is
/// hundreds of thousands of parts.
const MAX_MANIFEST_BYTES: usize = 64 * 1024 * 1024;

impl Archiver {
    pub(super) async fn read_manifest(&self, prefix: &str) -> Result<Option<Manifest>, JobError> {
        let key = format!("{prefix}manifest");
        let out = match self
            .s3
            .get_object()
            .bucket(&self.upload_bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => {
                return Ok(None);
            }
            Err(e) => return Err(AwsError::from_sdk("s3", "GetObject", e).into()),
        };
        if out.content_length().unwrap_or(0) as usize > MAX_MANIFEST_BYTES {
            return Err(JobError::Archive(format!(
                "manifest {key} is larger than {MAX_MANIFEST_BYTES} bytes"
            )));
        }
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| stream_error("GetObject", e))?
            .into_bytes();
        // Every entry is checked before anything is written.
        manifest_part_keys(&body, &self.upload_bucket, prefix)?;
        let manifest: Manifest = serde_json::from_slice(&body)
            .map_err(|e| JobError::Archive(format!("manifest {key} is not valid: {e}")))?;
        Ok(Some(manifest))
    }

    pub(super) fn part_key<'m>(&self, url: &'m str, prefix: &str) -> Result<&'m str, JobError> {
        entry_key(&self.upload_bucket, url, prefix)
    }
}

/// Parses an UNLOAD manifest and checks every entry; returns the part keys in order.
pub fn manifest_part_keys(
    body: &[u8],
    bucket: &str,
    prefix: &str,
) -> Result<Vec<String>, JobError> {
    let manifest: Manifest = serde_json::from_slice(body)
        .map_err(|e| JobError::Archive(format!("the manifest is not valid: {e}")))?;
    manifest
        .entries
        .iter()
        .map(|e| entry_key(bucket, &e.url, prefix).map(str::to_string))
        .collect()
}

/// The key of a manifest entry, which must lie under the attempt's own prefix: a manifest
/// can never make the worker read (or, afterwards, delete) anything else.
fn entry_key<'m>(bucket: &str, url: &'m str, prefix: &str) -> Result<&'m str, JobError> {
    url.strip_prefix("s3://")
        .and_then(|rest| rest.strip_prefix(bucket))
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|key| {
            key.starts_with(prefix)
                && key.len() > prefix.len()
                && !key.split('/').any(|segment| segment == "..")
        })
        .ok_or_else(|| {
            JobError::Archive(format!(
                "manifest entry {url} is not under s3://{bucket}/{prefix}"
            ))
        })
}

/// A CSV header line with Redshift's quoting.
pub(super) fn csv_header(columns: &[&str]) -> String {
    let quoted: Vec<String> = columns
        .iter()
        .map(|c| {
            if c.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.to_string()
            }
        })
        .collect();
    format!("{}\n", quoted.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::Client;

    #[test]
    fn manifest_entries_must_lie_under_the_attempts_prefix() {
        let s3 = Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .build(),
        );
        let settings: crate::config::Settings = crate::config::Settings::for_tests();
        let a = Archiver::new(s3, settings.archive, "up".into());
        let prefix = "unload/r1/2/";
        assert_eq!(
            a.part_key("s3://up/unload/r1/2/0000_part_00.gz", prefix)
                .unwrap(),
            "unload/r1/2/0000_part_00.gz"
        );
        for bad in [
            "s3://other/unload/r1/2/0000_part_00.gz",
            "s3://up/unload/r1/1/0000_part_00.gz",
            "s3://up/unload/r2/2/0000_part_00.gz",
            "s3://up/unload/r1/2/../../r2/2/0000_part_00.gz",
            "s3://up/unload/r1/2/",
            "s3://upx/unload/r1/2/0000_part_00.gz",
            "https://up/unload/r1/2/0000_part_00.gz",
        ] {
            assert!(a.part_key(bad, prefix).is_err(), "{bad}");
        }
    }

    #[test]
    fn csv_header_quotes_like_redshift() {
        assert_eq!(csv_header(&["id", "name"]), "id,name\n");
        assert_eq!(
            csv_header(&["a,b", "say \"x\""]),
            "\"a,b\",\"say \"\"x\"\"\"\n"
        );
    }
}
