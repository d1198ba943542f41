//! GetStatementResult: a finished statement's rows, a page at a time, in the Data API's
//! type mapping.

use serde_json::{Value, json};

use super::App;
use crate::error::ApiError;
use crate::model::{Field, GetStatementResultInput};
use crate::state::{FieldKind, Status};

pub(super) fn get_statement_result(
    app: &App,
    input: GetStatementResultInput,
) -> Result<Value, ApiError> {
    let (status, result) = app
        .ctx
        .registry
        .with(&input.id, |s| (s.status, s.result.clone()))?;
    if status != Status::Finished {
        return Err(ApiError::validation(format!(
            "Query does not have result. The statement is {}; check it with DescribeStatement.",
            status.as_str()
        )));
    }
    let Some(result) = result else {
        return Err(ApiError::validation(
            "Query does not have result. Please check query status with DescribeStatement.",
        ));
    };
    let start = match &input.next_token {
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| ApiError::validation("Invalid NextToken"))?,
    };
    let end = (start + app.page_rows.max(1)).min(result.rows.len());
    let records: Vec<Vec<Field>> = result.rows[start.min(end)..end]
        .iter()
        .map(|row| {
            row.iter()
                .zip(&result.kinds)
                .map(|(v, k)| field(v.as_deref(), *k))
                .collect()
        })
        .collect();
    let mut out = json!({
        "Records": records,
        "ColumnMetadata": result.columns,
        "TotalNumRows": result.rows.len(),
    });
    if end < result.rows.len() {
        out["NextToken"] = json!(end.to_string());
    }
    Ok(out)
}

/// The Data API's type mapping of one value.
fn field(value: Option<&str>, kind: FieldKind) -> Field {
    let Some(v) = value else {
        return Field::IsNull(true);
    };
    match kind {
        FieldKind::Long => v
            .parse()
            .map(Field::LongValue)
            .unwrap_or_else(|_| Field::StringValue(v.into())),
        FieldKind::Double => match v.parse::<f64>() {
            Ok(d) if d.is_finite() => Field::DoubleValue(d),
            _ => Field::StringValue(v.into()),
        },
        FieldKind::Boolean => Field::BooleanValue(v == "t"),
        FieldKind::Blob => Field::BlobValue(base64(&decode_bytea_hex(v))),
        FieldKind::String => Field::StringValue(v.into()),
    }
}

/// PostgreSQL prints bytea as `\x` followed by hex digits.
fn decode_bytea_hex(v: &str) -> Vec<u8> {
    let hex = v.strip_prefix("\\x").unwrap_or(v).as_bytes();
    hex.chunks(2)
        .filter_map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
        })
        .collect()
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(decode_bytea_hex("\\x666f6f"), b"foo");
    }
}
