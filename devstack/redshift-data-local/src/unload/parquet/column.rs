//! The columns of a Parquet file: each PostgreSQL type's Parquet type ([`Kind`]) and the
//! values of the row group being built.

use parquet::basic::{LogicalType, Repetition, TimeUnit, Type as PhysicalType};
use parquet::column::writer::ColumnWriter;
use parquet::data_type::{ByteArray, FixedLenByteArray};
use parquet::schema::types::Type;

use super::text::{parse_date, parse_timestamp, unscaled};

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

    pub(super) fn schema_type(self, name: &str) -> parquet::errors::Result<Type> {
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

pub(super) struct Column {
    name: String,
    pub(super) kind: Kind,
    values: Values,
    /// Definition levels: 1 for a value, 0 for NULL.
    levels: Vec<i16>,
}

impl Column {
    pub(super) fn new(name: String, kind: Kind) -> Column {
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
    pub(super) fn push(&mut self, field: Option<&str>) -> Result<usize, String> {
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
    pub(super) fn write(&mut self, writer: &mut ColumnWriter<'_>) -> parquet::errors::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
