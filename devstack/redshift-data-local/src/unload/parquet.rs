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

use std::io::Write;
use std::sync::{Arc, Mutex};

use parquet::basic::{Compression, LogicalType, Repetition, TimeUnit, Type as PhysicalType};
use parquet::column::writer::ColumnWriter;
use parquet::data_type::{ByteArray, FixedLenByteArray};
use parquet::file::properties::{WriterProperties, WriterVersion};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

use super::UnloadFailure;
use super::sink::ObjectWriter;

/// Rows per row group, at most.
pub const ROW_GROUP_ROWS: usize = 64 * 1024;
/// Bytes of buffered values per row group, at most (about).
pub const ROW_GROUP_BYTES: usize = 4 * 1024 * 1024;

/// How one column is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int16,
    Int32,
    Int64,
    Float,
    Double,
    Decimal { precision: u8, scale: u8 },
    Date,
    Timestamp { utc: bool },
    Text,
}

impl Kind {
    /// The kind for a column of PostgreSQL type `typname` whose `format_type()` is `formatted`.
    pub fn for_column(typname: &str, formatted: &str) -> Kind {
        match typname {
            "bool" => Kind::Bool,
            "int2" => Kind::Int16,
            "int4" => Kind::Int32,
            "int8" | "oid" => Kind::Int64,
            "float4" => Kind::Float,
            "float8" => Kind::Double,
            "date" => Kind::Date,
            "timestamp" => Kind::Timestamp { utc: false },
            "timestamptz" => Kind::Timestamp { utc: true },
            "numeric" => numeric_dimensions(formatted).map_or(Kind::Text, |(precision, scale)| {
                Kind::Decimal { precision, scale }
            }),
            _ => Kind::Text,
        }
    }

    fn schema_type(self, name: &str) -> parquet::errors::Result<Type> {
        let (physical, logical) = match self {
            Kind::Bool => (PhysicalType::BOOLEAN, None),
            Kind::Int16 => (PhysicalType::INT32, Some(LogicalType::integer(16, true))),
            Kind::Int32 => (PhysicalType::INT32, None),
            Kind::Int64 => (PhysicalType::INT64, None),
            Kind::Float => (PhysicalType::FLOAT, None),
            Kind::Double => (PhysicalType::DOUBLE, None),
            Kind::Decimal { precision, scale } => {
                let physical = if precision <= 18 {
                    PhysicalType::INT64
                } else {
                    PhysicalType::FIXED_LEN_BYTE_ARRAY
                };
                let logical = LogicalType::decimal(i32::from(scale), i32::from(precision));
                return Type::primitive_type_builder(name, physical)
                    .with_repetition(Repetition::OPTIONAL)
                    .with_length(if precision <= 18 { -1 } else { 16 })
                    .with_logical_type(Some(logical))
                    .with_precision(i32::from(precision))
                    .with_scale(i32::from(scale))
                    .build();
            }
            Kind::Date => (PhysicalType::INT32, Some(LogicalType::Date)),
            Kind::Timestamp { utc } => (
                PhysicalType::INT64,
                Some(LogicalType::timestamp(utc, TimeUnit::MICROS)),
            ),
            Kind::Text => (PhysicalType::BYTE_ARRAY, Some(LogicalType::String)),
        };
        Type::primitive_type_builder(name, physical)
            .with_repetition(Repetition::OPTIONAL)
            .with_logical_type(logical)
            .build()
    }
}

/// `numeric(12,2)` → (12, 2); `numeric(5)` → (5, 0); unconstrained or wider than 38 → None.
fn numeric_dimensions(formatted: &str) -> Option<(u8, u8)> {
    let inner = formatted.strip_prefix("numeric(")?.strip_suffix(')')?;
    let mut dims = inner.split(',').map(|d| d.trim().parse::<u8>());
    let precision = dims.next()?.ok()?;
    let scale = match dims.next() {
        Some(s) => s.ok()?,
        None => 0,
    };
    (1..=38)
        .contains(&precision)
        .then_some((precision, scale))
        .filter(|(p, s)| s <= p)
}

/// The parsed values of one column for the row group being built.
enum Values {
    Bool(Vec<bool>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bytes(Vec<ByteArray>),
    Fixed(Vec<FixedLenByteArray>),
}

struct Column {
    name: String,
    kind: Kind,
    values: Values,
    /// Definition levels: 1 for a value, 0 for NULL.
    levels: Vec<i16>,
}

impl Column {
    fn new(name: String, kind: Kind) -> Column {
        let values = match kind {
            Kind::Bool => Values::Bool(Vec::new()),
            Kind::Int16 | Kind::Int32 | Kind::Date => Values::I32(Vec::new()),
            Kind::Int64 | Kind::Timestamp { .. } => Values::I64(Vec::new()),
            Kind::Decimal { precision, .. } if precision <= 18 => Values::I64(Vec::new()),
            Kind::Decimal { .. } => Values::Fixed(Vec::new()),
            Kind::Float => Values::F32(Vec::new()),
            Kind::Double => Values::F64(Vec::new()),
            Kind::Text => Values::Bytes(Vec::new()),
        };
        Column {
            name,
            kind,
            values,
            levels: Vec::new(),
        }
    }

    /// Adds one value; returns about how many bytes it holds.
    fn push(&mut self, field: Option<&str>) -> Result<usize, String> {
        let Some(text) = field else {
            self.levels.push(0);
            return Ok(1);
        };
        let bad = || {
            format!(
                "value {text:?} of column {:?} cannot be written as Parquet {:?}",
                self.name, self.kind
            )
        };
        let size = match (&mut self.values, self.kind) {
            (Values::Bool(v), _) => {
                v.push(match text {
                    "t" => true,
                    "f" => false,
                    _ => return Err(bad()),
                });
                1
            }
            (Values::I32(v), Kind::Date) => {
                let days = parse_date(text).ok_or_else(bad)?;
                v.push(i32::try_from(days).map_err(|_| bad())?);
                4
            }
            (Values::I32(v), _) => {
                v.push(text.parse().map_err(|_| bad())?);
                4
            }
            (Values::I64(v), Kind::Timestamp { utc }) => {
                v.push(parse_timestamp(text, utc).ok_or_else(bad)?);
                8
            }
            (Values::I64(v), Kind::Decimal { scale, .. }) => {
                let unscaled = unscaled(text, scale).ok_or_else(bad)?;
                v.push(i64::try_from(unscaled).map_err(|_| bad())?);
                8
            }
            (Values::I64(v), _) => {
                v.push(text.parse().map_err(|_| bad())?);
                8
            }
            (Values::Fixed(v), Kind::Decimal { scale, .. }) => {
                let unscaled = unscaled(text, scale).ok_or_else(bad)?;
                v.push(FixedLenByteArray::from(unscaled.to_be_bytes().to_vec()));
                16
            }
            (Values::Fixed(_), _) => return Err(bad()),
            (Values::F32(v), _) => {
                v.push(text.parse().map_err(|_| bad())?);
                4
            }
            (Values::F64(v), _) => {
                v.push(text.parse().map_err(|_| bad())?);
                8
            }
            (Values::Bytes(v), _) => {
                v.push(ByteArray::from(text.as_bytes().to_vec()));
                text.len() + 4
            }
        };
        self.levels.push(1);
        Ok(size)
    }

    /// Writes the buffered values into the row group's column writer and empties the buffer.
    fn write(&mut self, writer: &mut ColumnWriter<'_>) -> parquet::errors::Result<()> {
        let levels = Some(self.levels.as_slice());
        match (&mut self.values, writer) {
            (Values::Bool(v), ColumnWriter::BoolColumnWriter(w)) => {
                w.write_batch(v, levels, None)?;
                v.clear();
            }
            (Values::I32(v), ColumnWriter::Int32ColumnWriter(w)) => {
                w.write_batch(v, levels, None)?;
                v.clear();
            }
            (Values::I64(v), ColumnWriter::Int64ColumnWriter(w)) => {
                w.write_batch(v, levels, None)?;
                v.clear();
            }
            (Values::F32(v), ColumnWriter::FloatColumnWriter(w)) => {
                w.write_batch(v, levels, None)?;
                v.clear();
            }
            (Values::F64(v), ColumnWriter::DoubleColumnWriter(w)) => {
                w.write_batch(v, levels, None)?;
                v.clear();
            }
            (Values::Bytes(v), ColumnWriter::ByteArrayColumnWriter(w)) => {
                w.write_batch(v, levels, None)?;
                v.clear();
            }
            (Values::Fixed(v), ColumnWriter::FixedLenByteArrayColumnWriter(w)) => {
                w.write_batch(v, levels, None)?;
                v.clear();
            }
            _ => {
                return Err(parquet::errors::ParquetError::General(format!(
                    "column {:?} does not match its schema",
                    self.name
                )));
            }
        }
        self.levels.clear();
        Ok(())
    }
}

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

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's days_from_civil).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn number(text: &str, digits: usize) -> Option<i64> {
    (text.len() == digits && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// `YYYY-MM-DD` (PostgreSQL's ISO output; BC dates and infinities are refused).
fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.splitn(3, '-');
    let year = number(parts.next()?, 4)?;
    let month = number(parts.next()?, 2)?;
    let day = number(parts.next()?, 2)?;
    ((1..=12).contains(&month) && (1..=31).contains(&day))
        .then(|| days_from_civil(year, month, day))
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff][±HH[:MM[:SS]]]` → microseconds since the epoch (UTC when
/// the value carries an offset, which only `timestamptz` output does).
fn parse_timestamp(text: &str, utc: bool) -> Option<i64> {
    let (date, time) = text.split_once(' ')?;
    let days = parse_date(date)?;
    let (clock, offset) = match time.find(['+', '-']) {
        Some(at) if utc => (&time[..at], Some(&time[at..])),
        Some(_) => return None,
        None => (time, None),
    };
    let (whole, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut hms = whole.splitn(3, ':');
    let h = number(hms.next()?, 2)?;
    let m = number(hms.next()?, 2)?;
    let s = number(hms.next()?, 2)?;
    if fraction.len() > 6 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros = if fraction.is_empty() {
        0
    } else {
        fraction.parse::<i64>().ok()? * 10i64.pow(6 - fraction.len() as u32)
    };
    let mut seconds = days * 86_400 + h * 3600 + m * 60 + s;
    if let Some(offset) = offset {
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let mut parts = offset[1..].splitn(3, ':');
        let oh = number(parts.next()?, 2)?;
        let om = parts.next().map_or(Some(0), |p| number(p, 2))?;
        let os = parts.next().map_or(Some(0), |p| number(p, 2))?;
        seconds -= sign * (oh * 3600 + om * 60 + os);
    }
    seconds.checked_mul(1_000_000)?.checked_add(micros)
}

/// A decimal's text as an integer scaled by `scale` digits: `-12.5` at scale 2 → -1250.
fn unscaled(text: &str, scale: u8) -> Option<i128> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let scale = usize::from(scale);
    if whole.is_empty() || fraction.len() > scale {
        return None;
    }
    let mut value: i128 = 0;
    for b in whole
        .bytes()
        .chain(fraction.bytes())
        .chain(std::iter::repeat_n(b'0', scale - fraction.len()))
    {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_timestamps_count_from_the_epoch() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2024-01-01"), Some(19_723));
        assert_eq!(parse_date("1969-12-31"), Some(-1));
        assert_eq!(parse_date("2000-02-29"), Some(11_016));
        for bad in ["infinity", "0044-03-15 BC", "2024-1-01", "2024-13-01", ""] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
        assert_eq!(
            parse_timestamp("2024-01-01 00:00:37", false),
            Some(1_704_067_237_000_000)
        );
        assert_eq!(
            parse_timestamp("1970-01-01 00:00:00.5", false),
            Some(500_000)
        );
        assert_eq!(
            parse_timestamp("1970-01-01 01:00:00.000001+01", true),
            Some(1)
        );
        assert_eq!(parse_timestamp("1969-12-31 19:30:00-04:30", true), Some(0));
        assert_eq!(parse_timestamp("1970-01-01 00:00:00+01", false), None);
        assert_eq!(parse_timestamp("1970-01-01 00:00:00.1234567", false), None);
    }

    #[test]
    fn decimals_are_scaled_exactly() {
        assert_eq!(unscaled("12.30", 2), Some(1230));
        assert_eq!(unscaled("-0.05", 2), Some(-5));
        assert_eq!(unscaled("7", 3), Some(7000));
        assert_eq!(unscaled("1.234", 2), None, "more digits than the scale");
        for bad in ["NaN", "", "-", ".5", "1e3", "1.2.3"] {
            assert_eq!(unscaled(bad, 2), None, "{bad}");
        }
        assert_eq!(
            unscaled("99999999999999999999999999999999999999", 0),
            Some(99_999_999_999_999_999_999_999_999_999_999_999_999)
        );
    }

    #[test]
    fn types_follow_the_documented_mapping() {
        assert_eq!(
            Kind::for_column("numeric", "numeric(12,2)"),
            Kind::Decimal {
                precision: 12,
                scale: 2
            }
        );
        assert_eq!(Kind::for_column("numeric", "numeric"), Kind::Text);
        assert_eq!(
            Kind::for_column("varchar", "character varying(20)"),
            Kind::Text
        );
        assert_eq!(Kind::for_column("int2", "smallint"), Kind::Int16);
        assert_eq!(
            Kind::for_column("timestamptz", "timestamp with time zone"),
            Kind::Timestamp { utc: true }
        );
    }

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
