//! The manifest an UNLOAD with MANIFEST writes: its entries, and with VERBOSE their record
//! counts, the totals and the schema of the columns.

use serde_json::{Value, json};

use super::Column;
use super::parse::UnloadSpec;

pub(super) fn manifest_json(
    spec: &UnloadSpec,
    columns: &[Column],
    entries: &[(String, u64, u64)],
) -> Value {
    let entry = |(key, len, records): &(String, u64, u64)| {
        let meta = if spec.manifest_verbose {
            json!({ "content_length": len, "record_count": records })
        } else {
            json!({ "content_length": len })
        };
        json!({ "url": format!("s3://{}/{}", spec.bucket, key), "meta": meta })
    };
    let mut manifest = json!({ "entries": entries.iter().map(entry).collect::<Vec<_>>() });
    if spec.manifest_verbose {
        let elements: Vec<Value> = columns
            .iter()
            .map(|c| json!({ "name": c.name, "type": schema_type(&c.formatted) }))
            .collect();
        manifest["schema"] = json!({ "elements": elements });
        manifest["meta"] = json!({
            "content_length": entries.iter().map(|e| e.1).sum::<u64>(),
            "record_count": entries.iter().map(|e| e.2).sum::<u64>(),
        });
        manifest["author"] = json!({ "name": "Amazon Redshift", "version": "1.0.0" });
    }
    manifest
}

/// `character varying(50)` → `{"base": "character varying", "byte_length": 50}`;
/// `numeric(12,2)` → `{"base": "numeric", "precision": 12, "scale": 2}`.
fn schema_type(formatted: &str) -> Value {
    let Some((base, rest)) = formatted.split_once('(') else {
        return json!({ "base": formatted });
    };
    let dims: Vec<u64> = rest
        .trim_end_matches(')')
        .split(',')
        .filter_map(|d| d.trim().parse().ok())
        .collect();
    let base = base.trim();
    match (base, dims.as_slice()) {
        ("numeric", [p, s]) => json!({ "base": base, "precision": p, "scale": s }),
        ("numeric", [p]) => json!({ "base": base, "precision": p, "scale": 0 }),
        (_, [n]) => json!({ "base": base, "byte_length": n }),
        _ => json!({ "base": formatted }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_types_carry_dimensions() {
        assert_eq!(schema_type("integer"), json!({"base": "integer"}));
        assert_eq!(
            schema_type("character varying(50)"),
            json!({"base": "character varying", "byte_length": 50})
        );
        assert_eq!(
            schema_type("numeric(12,2)"),
            json!({"base": "numeric", "precision": 12, "scale": 2})
        );
        assert_eq!(
            schema_type("timestamp(3) without time zone"),
            json!({"base": "timestamp(3) without time zone"})
        );
    }
}
