//! UNLOAD: run the inner SELECT on PostgreSQL and write its rows to S3 the way Redshift does —
//! object names, slices, file-size splitting, HEADER in every file, GZIP, Parquet
//! ([`parquet`]), manifests, overwrite rules. Rows are streamed from PostgreSQL to S3; no more than one multipart part per open
//! file is held in memory.

pub mod encode;
mod manifest;
pub mod parquet;
pub mod parse;
pub mod sink;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_postgres::SimpleQueryMessage;

use encode::{RowEncoder, ValueKind};
use manifest::manifest_json;
use parse::{Compression, Format, UnloadSpec};
use sink::{DataFile, ObjectWriter, Target};

/// What the emulator writes when an UNLOAD with MANIFEST returns no rows. Redshift's behaviour
/// is not documented, so clients must cope with both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ZeroRowManifest {
    /// A manifest with an empty `entries` list.
    Empty,
    /// No manifest object at all.
    Omit,
}

/// Emulator-wide UNLOAD settings.
#[derive(Debug, Clone)]
pub struct UnloadSettings {
    /// Number of emulated slices for PARALLEL ON.
    pub slices: usize,
    /// Multipart part size for data files.
    pub part_size: usize,
    pub zero_row_manifest: ZeroRowManifest,
}

/// The result of a finished UNLOAD.
#[derive(Debug, Clone, Default)]
pub struct UnloadOutcome {
    /// Data rows written (headers not counted).
    pub rows: u64,
    /// Total bytes of the data files.
    pub bytes: u64,
}

/// Why an UNLOAD did not finish: an error text for `DescribeStatement.Error`, or a cancel.
#[derive(Debug)]
pub enum UnloadFailure {
    Error(String),
    Cancelled,
}

impl<E: std::fmt::Display> From<E> for UnloadFailure {
    fn from(e: E) -> Self {
        UnloadFailure::Error(e.to_string())
    }
}

/// Renders a PostgreSQL error the way Redshift reports database errors.
pub fn pg_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("ERROR: {}", db.message()),
        None => format!("ERROR: {e}"),
    }
}

struct Column {
    name: String,
    kind: ValueKind,
    /// How the column is written in FORMAT PARQUET.
    parquet: parquet::Kind,
    /// `format_type()` output, e.g. `character varying(50)`.
    formatted: String,
}

/// Runs one UNLOAD to completion.
pub async fn run(
    pg: &tokio_postgres::Client,
    s3: &aws_sdk_s3::Client,
    spec: &UnloadSpec,
    settings: &UnloadSettings,
    cancel: &mut watch::Receiver<bool>,
) -> Result<UnloadOutcome, UnloadFailure> {
    let columns = describe_columns(pg, &spec.select).await?;
    if spec.format == Format::Json {
        for (i, c) in columns.iter().enumerate() {
            if columns[..i].iter().any(|o| o.name == c.name) {
                return Err(UnloadFailure::Error(format!(
                    "ERROR: column names must be unique for FORMAT JSON; \"{}\" appears more than once",
                    c.name
                )));
            }
        }
    }
    let target = Target {
        client: s3.clone(),
        bucket: spec.bucket.clone(),
        encryption: spec.encryption.clone(),
        part_size: settings.part_size.max(sink::MIN_PART_SIZE),
    };
    prepare_destination(&target, spec).await?;

    let encoder = RowEncoder::new(
        spec,
        columns.iter().map(|c| c.name.clone()).collect(),
        columns.iter().map(|c| c.kind).collect(),
    );
    let parquet_kinds: Vec<parquet::Kind> = columns.iter().map(|c| c.parquet).collect();
    let slice_count = if spec.parallel {
        settings.slices.max(1)
    } else {
        1
    };
    let mut slices: Vec<Slice> = (0..slice_count)
        .map(|index| Slice {
            index,
            file: None,
            next_part: 0,
            done: Vec::new(),
        })
        .collect();

    let written = stream_rows(
        pg,
        spec,
        &encoder,
        &parquet_kinds,
        &target,
        &mut slices,
        cancel,
    )
    .await;
    let rows = match written {
        Ok(rows) => rows,
        Err(e) => {
            for slice in &mut slices {
                if let Some(file) = slice.file.take() {
                    file.abort().await;
                }
            }
            return Err(e);
        }
    };
    let mut entries = Vec::new();
    for slice in &mut slices {
        if let Some(file) = slice.file.take() {
            slice.done.push(file.finish().await?);
        }
        entries.append(&mut slice.done);
    }
    let bytes = entries.iter().map(|(_, len, _)| len).sum();
    if spec.manifest && !(entries.is_empty() && settings.zero_row_manifest == ZeroRowManifest::Omit)
    {
        let manifest = manifest_json(spec, &columns, &entries);
        let key = format!("{}manifest", spec.prefix);
        target
            .put(&key, manifest.to_string().into_bytes(), "application/json")
            .await?;
    }
    Ok(UnloadOutcome { rows, bytes })
}

/// Column names and types of the SELECT, without running it.
async fn describe_columns(
    pg: &tokio_postgres::Client,
    select: &str,
) -> Result<Vec<Column>, UnloadFailure> {
    let stmt = pg
        .prepare(select)
        .await
        .map_err(|e| UnloadFailure::Error(pg_error_text(&e)))?;
    if stmt.columns().is_empty() {
        return Err(UnloadFailure::Error(
            "ERROR: UNLOAD requires a query that returns rows".into(),
        ));
    }
    // format_type() gives the SQL name with its dimensions, as the VERBOSE manifest reports them.
    let calls: Vec<String> = stmt
        .columns()
        .iter()
        .map(|c| format!("format_type({}, {})", c.type_().oid(), c.type_modifier()))
        .collect();
    let formatted: Vec<String> = pg
        .simple_query(&format!("SELECT {}", calls.join(", ")))
        .await
        .map_err(|e| UnloadFailure::Error(pg_error_text(&e)))?
        .into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("unknown").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default();
    Ok(stmt
        .columns()
        .iter()
        .enumerate()
        .map(|(i, c)| Column {
            name: c.name().to_string(),
            kind: ValueKind::for_type(c.type_().name()),
            parquet: parquet::Kind::for_column(
                c.type_().name(),
                formatted.get(i).map_or("", String::as_str),
            ),
            formatted: formatted
                .get(i)
                .cloned()
                .unwrap_or_else(|| c.type_().name().to_string()),
        })
        .collect())
}

/// CLEANPATH empties the prefix; otherwise an existing output object is an error unless
/// ALLOWOVERWRITE is given.
async fn prepare_destination(target: &Target, spec: &UnloadSpec) -> Result<(), UnloadFailure> {
    let mut existing = Vec::new();
    let mut pages = target
        .client
        .list_objects_v2()
        .bucket(&target.bucket)
        .prefix(&spec.prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            UnloadFailure::Error(format!(
                "ERROR: S3ServiceException: cannot list s3://{}/{}: {}",
                target.bucket,
                spec.prefix,
                aws_sdk_s3::error::DisplayErrorContext(e)
            ))
        })?;
        existing.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
    }
    if spec.clean_path {
        for key in &existing {
            target
                .client
                .delete_object()
                .bucket(&target.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| {
                    UnloadFailure::Error(format!(
                        "ERROR: S3ServiceException: CLEANPATH could not delete {key}: {}",
                        aws_sdk_s3::error::DisplayErrorContext(e)
                    ))
                })?;
        }
        return Ok(());
    }
    let clash = existing
        .iter()
        .find(|k| is_output_name(&k[spec.prefix.len()..]));
    match clash {
        Some(key) if !spec.allow_overwrite => Err(UnloadFailure::Error(format!(
            "ERROR: Specified unload destination on S3 is not empty. Consider using a different bucket / prefix, \
             manually removing the target files in S3, or using the ALLOWOVERWRITE option. (found s3://{}/{key})",
            target.bucket
        ))),
        _ => Ok(()),
    }
}

/// True for a key suffix that an UNLOAD to this prefix could write.
fn is_output_name(suffix: &str) -> bool {
    let b = suffix.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    suffix == "manifest"
        || (digits(0..4) && suffix.get(4..10) == Some("_part_") && digits(10..12))
        || digits(0..3)
}

/// A data file being written: text (delimited, CSV, JSON; maybe gzipped) or Parquet.
enum OutputFile {
    Text(DataFile),
    Parquet(parquet::ParquetFile),
}

impl OutputFile {
    fn records(&self) -> u64 {
        match self {
            OutputFile::Text(f) => f.records,
            OutputFile::Parquet(f) => f.records,
        }
    }

    fn size(&self) -> u64 {
        match self {
            OutputFile::Text(f) => f.size(),
            OutputFile::Parquet(f) => f.size(),
        }
    }

    /// `(key, content_length, records)`.
    async fn finish(self) -> Result<(String, u64, u64), UnloadFailure> {
        match self {
            OutputFile::Text(f) => Ok(f.finish().await?),
            OutputFile::Parquet(f) => f.finish().await,
        }
    }

    async fn abort(self) {
        match self {
            OutputFile::Text(f) => f.abort().await,
            OutputFile::Parquet(f) => f.abort().await,
        }
    }
}

struct Slice {
    index: usize,
    file: Option<OutputFile>,
    next_part: usize,
    /// Finished files: (key, content_length, records).
    done: Vec<(String, u64, u64)>,
}

fn file_suffix(spec: &UnloadSpec) -> String {
    match (&spec.extension, spec.compression) {
        (Some(ext), _) => format!(".{ext}"),
        (None, _) if spec.format == Format::Parquet => ".parquet".into(),
        (None, Compression::Gzip) => ".gz".into(),
        (None, _) => String::new(),
    }
}

async fn stream_rows(
    pg: &tokio_postgres::Client,
    spec: &UnloadSpec,
    encoder: &RowEncoder,
    parquet_kinds: &[parquet::Kind],
    target: &Target,
    slices: &mut [Slice],
    cancel: &mut watch::Receiver<bool>,
) -> Result<u64, UnloadFailure> {
    let suffix = file_suffix(spec);
    let header_records = u64::from(spec.header);
    let stream = pg
        .simple_query_raw(&spec.select)
        .await
        .map_err(|e| UnloadFailure::Error(pg_error_text(&e)))?;
    let mut stream = std::pin::pin!(stream);
    let mut rows = 0u64;
    let mut record = Vec::with_capacity(1024);
    loop {
        let message = tokio::select! {
            biased;
            _ = cancel.wait_for(|c| *c) => return Err(UnloadFailure::Cancelled),
            m = stream.next() => m,
        };
        let row = match message {
            None => break,
            Some(Err(e)) => return Err(UnloadFailure::Error(pg_error_text(&e))),
            Some(Ok(SimpleQueryMessage::Row(row))) => row,
            Some(Ok(_)) => continue,
        };
        record.clear();
        let fields: Vec<Option<&str>> = (0..row.len()).map(|i| row.get(i)).collect();
        if spec.format != Format::Parquet {
            encoder.row(&fields, &mut record);
        }

        let slice_count = slices.len();
        let slice = &mut slices[(rows as usize) % slice_count];
        if let Some(file) = &slice.file
            && file.records() > header_records
            && file.size() + record.len() as u64 > spec.max_file_size
            && let Some(full) = slice.file.take()
        {
            slice.done.push(full.finish().await?);
        }
        let file = match &mut slice.file {
            Some(file) => file,
            None => {
                let key = if spec.parallel {
                    format!(
                        "{}{:04}_part_{:02}{suffix}",
                        spec.prefix, slice.index, slice.next_part
                    )
                } else {
                    format!("{}{:03}{suffix}", spec.prefix, slice.next_part)
                };
                slice.next_part += 1;
                let object = ObjectWriter::new(target.clone(), key);
                let file = if spec.format == Format::Parquet {
                    let names: Vec<String> = encoder.names().to_vec();
                    OutputFile::Parquet(parquet::ParquetFile::new(object, &names, parquet_kinds)?)
                } else {
                    let mut file = DataFile::new(object, spec.compression == Compression::Gzip);
                    if spec.header {
                        let mut header = Vec::new();
                        encoder.header(&mut header);
                        file.write_record(&header).await?;
                    }
                    OutputFile::Text(file)
                };
                slice.file.insert(file)
            }
        };
        match file {
            OutputFile::Text(file) => file.write_record(&record).await?,
            OutputFile::Parquet(file) => file.write_row(&fields).await?,
        }
        rows += 1;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_are_recognised() {
        for s in [
            "manifest",
            "0000_part_00",
            "0003_part_12.gz",
            "000",
            "001.gz",
            "042.csv",
        ] {
            assert!(is_output_name(s), "{s}");
        }
        for s in [
            "",
            "other",
            "manifest.json.bak",
            "00",
            "abc_part_00",
            "x000",
        ] {
            assert!(!is_output_name(s), "{s}");
        }
    }
}
