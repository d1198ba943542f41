//! `FORMAT AS PARQUET`: each row's values (PostgreSQL's text output) typed by Redshift's
//! mapping and written as real Parquet files — format version 1.0, Snappy-compressed pages,
//! every column optional, as Redshift's UNLOAD documentation describes its output.
//!
//! | PostgreSQL | Parquet physical type | logical type |
//! |---|---|---|
//! | `boolean` | BOOLEAN | |
//! | `smallint` | INT32 | INTEGER(16, signed) |
//! | `integer` | INT32 | |
//! | `bigint` | INT64 | |
//! | `real` / `double precision` | FLOAT / DOUBLE | |
//! | `numeric(p,s)`, p ≤ 18 | INT64 | DECIMAL(p,s) |
//! | `numeric(p,s)`, p ≤ 38 | FIXED_LEN_BYTE_ARRAY(16) | DECIMAL(p,s) |
//! | `date` | INT32 | DATE |
//! | `timestamp` | INT64 | TIMESTAMP(MICROS, not adjusted to UTC) |
//! | `timestamptz` | INT64 | TIMESTAMP(MICROS, adjusted to UTC): the zone is lost |
//! | anything else (`varchar`, `char`, `text`, unconstrained `numeric`, …) | BYTE_ARRAY | STRING |
//!
//! Rows are buffered column by column and written as a row group every [`ROW_GROUP_ROWS`]
//! rows or [`ROW_GROUP_BYTES`] bytes of values (Redshift's ROWGROUPSIZE is 32–128 MB; a
//! smaller group keeps the emulator's memory low); each finished row group goes on to the S3
//! object writer, so a file is never held whole.

mod column;
mod text;

use std::io::Write;
use std::sync::{Arc, Mutex};

use parquet::basic::Compression;
use parquet::file::properties::{WriterProperties, WriterVersion};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

use column::Column;
pub use column::Kind;

use super::UnloadFailure;
use super::sink::ObjectWriter;

/// Rows per row group, at most.
pub const ROW_GROUP_ROWS: usize = 64 * 1024;
/// Bytes of buffered values per row group, at most (about).
pub const ROW_GROUP_BYTES: usize = 4 * 1024 * 1024;

/// The bytes the Parquet writer has produced and the object writer has not yet taken.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Shared {
    fn take(&self) -> Vec<u8> {
        match self.0.lock() {
            Ok(mut buf) => std::mem::take(&mut *buf),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }

    fn len(&self) -> usize {
        self.0.lock().map_or(0, |b| b.len())
    }
}

impl Write for Shared {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut buf = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("Parquet buffer poisoned"))?;
        buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn parquet_error(e: parquet::errors::ParquetError) -> UnloadFailure {
    UnloadFailure::Error(format!("ERROR: writing Parquet failed: {e}"))
}

/// One Parquet data file being written.
pub struct ParquetFile {
    object: ObjectWriter,
    writer: SerializedFileWriter<Shared>,
    out: Shared,
    columns: Vec<Column>,
    buffered_rows: usize,
    buffered_bytes: usize,
    /// Rows written (what the VERBOSE manifest reports).
    pub records: u64,
}

impl ParquetFile {
    pub fn new(
        object: ObjectWriter,
        names: &[String],
        kinds: &[Kind],
    ) -> Result<Self, UnloadFailure> {
        let fields = names
            .iter()
            .zip(kinds)
            .map(|(name, kind)| kind.schema_type(name).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(parquet_error)?;
        let schema = Type::group_type_builder("schema")
            .with_fields(fields)
            .build()
            .map_err(parquet_error)?;
        let properties = WriterProperties::builder()
            .set_writer_version(WriterVersion::PARQUET_1_0)
            .set_compression(Compression::SNAPPY)
            .set_created_by("redshift-data-local".into())
            .build();
        let out = Shared::default();
        let writer = SerializedFileWriter::new(out.clone(), Arc::new(schema), Arc::new(properties))
            .map_err(parquet_error)?;
        Ok(ParquetFile {
            object,
            writer,
            out,
            columns: names
                .iter()
                .zip(kinds)
                .map(|(n, k)| Column::new(n.clone(), *k))
                .collect(),
            buffered_rows: 0,
            buffered_bytes: 0,
            records: 0,
        })
    }

    pub fn key(&self) -> &str {
        self.object.key()
    }

    /// About how large the file is so far, buffered rows included.
    pub fn size(&self) -> u64 {
        self.object.size() + (self.out.len() + self.buffered_bytes) as u64
    }

    pub async fn write_row(&mut self, fields: &[Option<&str>]) -> Result<(), UnloadFailure> {
        for (column, field) in self.columns.iter_mut().zip(fields) {
            self.buffered_bytes += column
                .push(*field)
                .map_err(|e| UnloadFailure::Error(format!("ERROR: {e}")))?;
        }
        self.buffered_rows += 1;
        self.records += 1;
        if self.buffered_rows >= ROW_GROUP_ROWS || self.buffered_bytes >= ROW_GROUP_BYTES {
            self.flush_row_group()?;
            let bytes = self.out.take();
            self.object.write(&bytes).await?;
        }
        Ok(())
    }

    fn flush_row_group(&mut self) -> Result<(), UnloadFailure> {
        if self.buffered_rows == 0 {
            return Ok(());
        }
        let mut group = self.writer.next_row_group().map_err(parquet_error)?;
        for column in &mut self.columns {
            let Some(mut writer) = group.next_column().map_err(parquet_error)? else {
                return Err(parquet_error(parquet::errors::ParquetError::General(
                    "fewer columns in the schema than in the row".into(),
                )));
            };
            column.write(writer.untyped()).map_err(parquet_error)?;
            writer.close().map_err(parquet_error)?;
        }
        group.close().map_err(parquet_error)?;
        self.buffered_rows = 0;
        self.buffered_bytes = 0;
        Ok(())
    }

    /// Writes the last row group and the footer and completes the object; returns
    /// `(key, content_length, records)`.
    pub async fn finish(mut self) -> Result<(String, u64, u64), UnloadFailure> {
        self.flush_row_group()?;
        self.writer.close().map_err(parquet_error)?;
        let rest = self.out.take();
        self.object.write(&rest).await?;
        let key = self.object.key().to_string();
        let len = self.object.finish("application/vnd.apache.parquet").await?;
        Ok((key, len, self.records))
    }

    pub async fn abort(self) {
        self.object.abort().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_file_reads_back() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let names = ["n".to_string(), "d".to_string(), "s".to_string()];
        let kinds = [
            Kind::Int16,
            Kind::Decimal {
                precision: 30,
                scale: 2,
            },
            Kind::Text,
        ];
        let fields: Vec<Arc<Type>> = names
            .iter()
            .zip(kinds)
            .map(|(n, k)| Arc::new(k.schema_type(n).unwrap()))
            .collect();
        let schema = Type::group_type_builder("schema")
            .with_fields(fields)
            .build()
            .unwrap();
        let out = Shared::default();
        let mut writer = SerializedFileWriter::new(
            out.clone(),
            Arc::new(schema),
            Arc::new(WriterProperties::builder().build()),
        )
        .unwrap();
        let mut columns: Vec<Column> = names
            .iter()
            .zip(kinds)
            .map(|(n, k)| Column::new(n.clone(), k))
            .collect();
        for row in [
            [Some("1"), Some("-12.50"), Some("a")],
            [None, None, Some("")],
        ] {
            for (c, v) in columns.iter_mut().zip(row) {
                c.push(v).unwrap();
            }
        }
        let mut group = writer.next_row_group().unwrap();
        for c in &mut columns {
            let mut w = group.next_column().unwrap().unwrap();
            c.write(w.untyped()).unwrap();
            w.close().unwrap();
        }
        group.close().unwrap();
        writer.close().unwrap();
        let bytes = bytes::Bytes::from(out.take());
        let reader = SerializedFileReader::new(bytes).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 2);
        let rows: Vec<String> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|r| r.unwrap().to_string())
            .collect();
        assert_eq!(rows.len(), 2);
        assert!(
            rows[0].contains("n: 1") && rows[0].contains("s: \"a\""),
            "{rows:?}"
        );
        assert!(rows[1].contains("n: null"), "{rows:?}");
        assert!(
            columns
                .iter_mut()
                .all(|c| c.push(Some("x")).is_err() || c.kind == Kind::Text)
        );
    }
}
