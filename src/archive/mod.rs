//! Turning one attempt's UNLOAD output into ONE zip in the archive bucket, streamed
//! end to end: S3 GET body → gzip pass-through or recompression → zip records → multipart
//! upload. Memory is bounded by the part size and fixed codec buffers, whatever the export size.
//!
//! - `single`: one `<request_id>.csv|json` entry; the header line (CSV) comes from the
//!   manifest's schema, since the parts are unloaded without HEADER. The parts' DEFLATE
//!   streams are joined into one without compressing anything again ([`join`]), every part
//!   decoded and verified on the way.
//! - `parts`: one entry per part, each gzip member's DEFLATE body copied as it is and verified
//!   ([`deflate::PassThrough`]).
//!
//! A part of several gzip members is joined member by member in either layout (in `parts` it
//! stays an entry of its own, closed with a final block). A part the joining decoder refuses
//! makes the archive be built again with recompression, where zlib decodes the parts and
//! judges whether they are corrupt ([`Archived::recompressed`] says why).
//! - Parquet (either layout): one stored entry per part, as Redshift wrote it ([`stored`]).
//! - Zero rows (no manifest, or one without entries): one empty CSV, with its header when the
//!   columns are known (JSON: one empty file; Parquet: no entry, since an empty file is not
//!   Parquet).

mod ahead;
mod codec;
mod decoders;
pub mod deflate;
pub mod edits;
mod huffman;
pub mod inflate;
pub mod join;
mod limits;
mod manifest;
mod parts;
mod read;
mod recompress;
pub mod sink;
mod spill;
mod stored;
mod symbols;
pub mod zip;

use std::time::SystemTime;

use aws_sdk_s3::Client;
use prometheus::IntCounterVec;

use crate::aws::{AwsError, AwsResultExt};
use crate::config::ArchiveSettings;
use crate::error::JobError;
use crate::message::{Format, Layout, RequestId};
use crate::metrics::Metrics;
pub use ahead::REREAD_FROM;
use deflate::Recompressor;
use limits::Budget;
pub use manifest::manifest_part_keys;
use manifest::{Manifest, csv_header};
use sink::MultipartSink;
use zip::ZipWriter;

/// What an archive needs to know about the export.
#[derive(Debug, Clone, Copy)]
pub struct Plan<'a> {
    pub request_id: &'a RequestId,
    pub format: Format,
    pub layout: Layout,
    /// Key prefix of this attempt's UNLOAD output (ends with `/`).
    pub unload_prefix: &'a str,
}

/// A written archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    pub key: String,
    pub bytes: u64,
    pub rows: u64,
    /// SHA-256 of the archive object, lowercase hex, computed while it streamed.
    pub sha256: String,
    /// Its entries, in order.
    pub entries: Vec<ArchivedEntry>,
    /// Why the archive had to be built again with recompression, when it had to.
    pub recompressed: Option<String>,
}

/// One entry of a written archive: what a receiver checks what it unpacked against.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArchivedEntry {
    pub name: String,
    pub crc32: u32,
    /// Uncompressed size.
    pub bytes: u64,
    /// Data rows (without a header line).
    pub rows: u64,
}

/// How entries are produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    PassThrough,
    Recompress,
}

enum BuildError {
    Job(JobError),
    /// A part cannot be passed through; the reason.
    Fallback(String),
}

impl<E: Into<JobError>> From<E> for BuildError {
    fn from(e: E) -> Self {
        BuildError::Job(e.into())
    }
}

#[derive(Clone, Debug)]
pub struct Archiver {
    s3: Client,
    settings: ArchiveSettings,
    upload_bucket: String,
    /// Parts being decoded at once, in every archive of the process.
    decoders: decoders::Decoders,
    decode_threads: usize,
    /// Reads the upload bucket's parts, by ranges when they are large.
    reader: read::Reader,
    /// Keeps parts on local disk between their two reads.
    spiller: spill::Spiller,
    /// `archive_part_rereads_total`, when the archiver reports to the process's metrics.
    rereads: Option<IntCounterVec>,
}

impl Archiver {
    pub fn new(s3: Client, settings: ArchiveSettings, upload_bucket: String) -> Self {
        let threads = match settings.decode_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n as usize,
        };
        let reader = read::Reader::new(
            s3.clone(),
            upload_bucket.clone(),
            settings.range_size_mib,
            settings.read_ahead_mib,
        );
        let spiller = spill::Spiller::new(&settings.spill_dir, settings.spill_mib);
        Archiver {
            s3,
            settings,
            upload_bucket,
            decoders: decoders::Decoders::new(threads),
            decode_threads: threads,
            reader,
            spiller,
            rereads: None,
        }
    }

    /// Counts in `metrics` where each part is read again from ([`REREAD_FROM`]).
    pub fn with_metrics(mut self, metrics: &Metrics) -> Self {
        self.rereads = Some(metrics.archive_part_rereads.clone());
        self
    }

    pub fn archive_key(&self, request_id: &RequestId) -> String {
        let prefix = self.settings.prefix.trim_matches('/');
        if prefix.is_empty() {
            format!("{request_id}.zip")
        } else {
            format!("{prefix}/{request_id}.zip")
        }
    }

    /// Builds (or rebuilds: the key is the same every time) the archive of one attempt,
    /// within `archive.max_archive_secs`.
    pub async fn build(&self, plan: Plan<'_>) -> Result<Archived, JobError> {
        let limit = std::time::Duration::from_secs(self.settings.max_archive_secs);
        tokio::time::timeout(limit, self.build_once(plan))
            .await
            .unwrap_or_else(|_| {
                Err(JobError::rejected(
                    "archive_timeout",
                    format!(
                        "the archive took longer than {} s (archive.max_archive_secs)",
                        limit.as_secs()
                    ),
                ))
            })
    }

    async fn build_once(&self, plan: Plan<'_>) -> Result<Archived, JobError> {
        let manifest = self.read_manifest(plan.unload_prefix).await?;
        match self.write(plan, manifest.as_ref(), Mode::PassThrough).await {
            Ok(done) => Ok(done),
            Err(BuildError::Job(e)) => Err(e),
            Err(BuildError::Fallback(reason)) => {
                tracing::warn!(
                    %reason,
                    "a part cannot be passed through; building the archive again with recompression"
                );
                match self.write(plan, manifest.as_ref(), Mode::Recompress).await {
                    Ok(done) => Ok(Archived {
                        recompressed: Some(reason),
                        ..done
                    }),
                    Err(BuildError::Job(e)) => Err(e),
                    Err(BuildError::Fallback(reason)) => Err(JobError::Archive(reason)),
                }
            }
        }
    }

    async fn write(
        &self,
        plan: Plan<'_>,
        manifest: Option<&Manifest>,
        mode: Mode,
    ) -> Result<Archived, BuildError> {
        let key = self.archive_key(plan.request_id);
        let filename = format!("{}.zip", plan.request_id);
        let mut sink =
            MultipartSink::start(self.s3.clone(), &self.settings, key.clone(), &filename);
        match self.write_entries(plan, manifest, mode, &mut sink).await {
            Ok(entries) => {
                let written = sink.finish().await?;
                Ok(Archived {
                    key,
                    bytes: written.bytes,
                    rows: entries.iter().map(|e| e.rows).sum(),
                    sha256: written.sha256,
                    entries,
                    recompressed: None,
                })
            }
            Err(e) => {
                sink.abort().await;
                Err(e)
            }
        }
    }

    /// Writes every entry and the central directory; returns the entries with their rows.
    async fn write_entries(
        &self,
        plan: Plan<'_>,
        manifest: Option<&Manifest>,
        mode: Mode,
        sink: &mut MultipartSink,
    ) -> Result<Vec<ArchivedEntry>, BuildError> {
        let entries = manifest.map(|m| m.entries.as_slice()).unwrap_or_default();
        let columns: Vec<&str> = manifest
            .and_then(|m| m.schema.as_ref())
            .map(|s| s.elements.iter().map(|e| e.name.as_str()).collect())
            .unwrap_or_default();
        let mut zip = ZipWriter::new(SystemTime::now());
        let mut budget = Budget::new(
            self.settings.max_uncompressed_bytes,
            self.settings.max_inflate_ratio,
        );
        let mut out = Vec::with_capacity(256 * 1024);
        let mut scratch = Vec::new();
        let ext = plan.format.extension();

        if plan.format == Format::Parquet {
            // Stored, one entry per file, whatever the layout says (a Parquet request is
            // always `parts`); zero rows make an archive without entries.
            self.store_parts(plan, entries, &mut zip, &mut out, sink, &mut budget)
                .await?;
        } else if plan.layout == Layout::Single || entries.is_empty() {
            let header = match plan.format {
                Format::Csv if !columns.is_empty() => csv_header(&columns),
                _ => String::new(),
            };
            zip.start_entry(&format!("{}.{ext}", plan.request_id), &mut out);
            let (crc, csize, usize) = match mode {
                Mode::PassThrough => {
                    self.join_parts(
                        plan,
                        header.as_bytes(),
                        entries,
                        &mut zip,
                        &mut out,
                        sink,
                        &mut budget,
                    )
                    .await?
                }
                Mode::Recompress => {
                    let mut rec = Recompressor::new(self.settings.compression_level);
                    rec.write(header.as_bytes()).map_err(archive_io)?;
                    for entry in entries {
                        let part = self.part_key(&entry.url, plan.unload_prefix)?;
                        self.inflate_part(part, &mut rec, &mut zip, &mut out, sink, &mut budget)
                            .await?;
                    }
                    let (crc, csize, usize) = rec.finish_into(&mut scratch).map_err(archive_io)?;
                    zip.write(&scratch, &mut out);
                    scratch.clear();
                    (crc, csize, usize)
                }
            };
            zip.finish_entry(crc, csize, usize, &mut out);
        } else if mode == Mode::PassThrough {
            self.pass_through_parts(plan, entries, &mut zip, &mut out, sink, &mut budget)
                .await?;
        } else {
            for entry in entries {
                let part = self.part_key(&entry.url, plan.unload_prefix)?;
                let base = part.rsplit('/').next().unwrap_or(part);
                let base = base.strip_suffix(".gz").unwrap_or(base);
                zip.start_entry(&format!("{base}.{ext}"), &mut out);
                // Counted part by part inside.
                let (crc, csize, usize) = self
                    .recompress(part, &mut zip, &mut out, sink, &mut budget)
                    .await?;
                zip.finish_entry(crc, csize, usize, &mut out);
            }
        }
        let written = zip.finish(&mut out);
        sink.write(&mut out).await?;

        // `parts` CSV is unloaded with HEADER, which Redshift counts as a record of each file.
        let header = u64::from(plan.layout == Layout::Parts && plan.format == Format::Csv);
        let rows: Vec<u64> = entries
            .iter()
            .map(|e| {
                e.meta
                    .as_ref()
                    .and_then(|m| m.record_count)
                    .unwrap_or(0)
                    .saturating_sub(header)
            })
            .collect();
        // One entry per part in `parts`; otherwise one entry holding every row.
        let one_entry = [rows.iter().sum()];
        let rows = if written.len() == rows.len() {
            rows.as_slice()
        } else {
            &one_entry
        };
        Ok(written
            .into_iter()
            .zip(rows)
            .map(|(e, &rows)| ArchivedEntry {
                name: e.name,
                crc32: e.crc32,
                bytes: e.bytes,
                rows,
            })
            .collect())
    }

    /// Deletes everything an attempt unloaded, a page of keys per DeleteObjects call (best
    /// effort; the bucket's lifecycle rules are the safety net).
    pub async fn delete_unloaded(&self, prefix: &str) -> Result<u64, JobError> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        let mut deleted = 0;
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.upload_bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.aws("s3", "ListObjectsV2")?;
            let keys: Vec<ObjectIdentifier> = page
                .contents()
                .iter()
                .filter_map(|o| ObjectIdentifier::builder().key(o.key()?).build().ok())
                .collect();
            if keys.is_empty() {
                continue;
            }
            let count = keys.len() as u64;
            let delete = Delete::builder()
                .set_objects(Some(keys))
                .quiet(true)
                .build()
                .map_err(|e| JobError::Archive(e.to_string()))?;
            let out = self
                .s3
                .delete_objects()
                .bucket(&self.upload_bucket)
                .delete(delete)
                .send()
                .await
                .aws("s3", "DeleteObjects")?;
            if let Some(first) = out.errors().first() {
                return Err(JobError::Archive(format!(
                    "{} of {count} unloaded files could not be deleted ({})",
                    out.errors().len(),
                    first.code().unwrap_or("error")
                )));
            }
            deleted += count;
        }
        Ok(deleted)
    }
}

fn stream_error(operation: &'static str, e: impl std::fmt::Display) -> JobError {
    AwsError::unanswered("s3", operation, format!("reading the body failed: {e}")).into()
}

fn corrupt(part: &str, e: impl std::fmt::Display) -> JobError {
    JobError::Archive(format!("{part}: {e}"))
}

fn archive_io(e: std::io::Error) -> JobError {
    JobError::Archive(e.to_string())
}
