//! Building the UNLOAD statement the worker issues: the rendered SELECT as one
//! quoted literal, a prefix unique to the request and attempt, and the configured options.

use crate::config::RedshiftSettings;
use crate::message::{Format, Layout, RequestId};

/// The key prefix one attempt unloads under: `<prefix>/<request_id>/<attempt>/`.
pub fn attempt_prefix(upload_prefix: &str, request_id: &RequestId, attempt: u32) -> String {
    let base = upload_prefix.trim_matches('/');
    if base.is_empty() {
        format!("{request_id}/{attempt}/")
    } else {
        format!("{base}/{request_id}/{attempt}/")
    }
}

/// Quotes text for the UNLOAD literal: Redshift decodes `''` and backslash escapes there
/// before it parses the SELECT, so both are doubled (again, on top of the SELECT's own
/// literals) — the same rule as any string literal.
pub fn unload_literal(select: &str) -> String {
    crate::template::escape_literal(select)
}

/// The whole UNLOAD statement.
pub fn build(
    select: &str,
    format: Format,
    layout: Layout,
    redshift: &RedshiftSettings,
    bucket: &str,
    key_prefix: &str,
) -> String {
    let select = select.trim().trim_end_matches(';').trim_end();
    let role = if redshift.iam_role == "default" {
        "default".to_string()
    } else {
        format!("'{}'", redshift.iam_role)
    };
    let mut sql = format!(
        "UNLOAD ({}) TO 's3://{bucket}/{key_prefix}' IAM_ROLE {role}",
        unload_literal(select)
    );
    match format {
        // `single` writes the header once itself, from the manifest's schema.
        Format::Csv if layout == Layout::Parts => sql.push_str(" FORMAT AS CSV HEADER"),
        Format::Csv => sql.push_str(" FORMAT AS CSV"),
        Format::Json => sql.push_str(" FORMAT AS JSON"),
        Format::Parquet => sql.push_str(" FORMAT AS PARQUET"),
    }
    // Parquet compresses inside (Snappy per row group) and refuses GZIP.
    if format != Format::Parquet {
        sql.push_str(" GZIP");
    }
    sql.push_str(&format!(
        " PARALLEL ON MAXFILESIZE {} MB MANIFEST VERBOSE ALLOWOVERWRITE",
        redshift.max_file_size_mb
    ));
    if let Some(key) = &redshift.kms_key_id {
        sql.push_str(&format!(" ENCRYPTED KMS_KEY_ID '{key}'"));
    }
    if let Some(region) = &redshift.region {
        sql.push_str(&format!(" REGION '{region}'"));
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redshift() -> RedshiftSettings {
        toml_settings()
    }

    fn toml_settings() -> RedshiftSettings {
        serde_json::from_value(serde_json::json!({"cluster_identifier": "c", "database": "dev"}))
            .unwrap()
    }

    #[test]
    fn statement_has_the_documented_shape() {
        let rid = RequestId::parse("r-1").unwrap();
        let prefix = attempt_prefix("unload/", &rid, 2);
        assert_eq!(prefix, "unload/r-1/2/");
        let sql = build(
            "select 'a' from t;",
            Format::Csv,
            Layout::Single,
            &redshift(),
            "up",
            &prefix,
        );
        assert_eq!(
            sql,
            "UNLOAD ('select ''a'' from t') TO 's3://up/unload/r-1/2/' IAM_ROLE default FORMAT AS CSV \
             GZIP PARALLEL ON MAXFILESIZE 256 MB MANIFEST VERBOSE ALLOWOVERWRITE"
        );
        let parts = build(
            "select 1",
            Format::Csv,
            Layout::Parts,
            &redshift(),
            "up",
            &prefix,
        );
        assert!(parts.contains("FORMAT AS CSV HEADER GZIP"));
        let mut kms = redshift();
        kms.kms_key_id = Some("k-1".into());
        kms.region = Some("eu-west-1".into());
        kms.iam_role = "arn:aws:iam::1:role/r".into();
        let json = build(
            "select 1",
            Format::Json,
            Layout::Single,
            &kms,
            "up",
            &prefix,
        );
        assert!(json.contains("IAM_ROLE 'arn:aws:iam::1:role/r' FORMAT AS JSON GZIP"));
        assert!(json.ends_with("ENCRYPTED KMS_KEY_ID 'k-1' REGION 'eu-west-1'"));
        // PARQUET with GZIP or HEADER is an error in Redshift; with SSE-KMS it is allowed.
        let parquet = build(
            "select 1",
            Format::Parquet,
            Layout::Parts,
            &kms,
            "up",
            &prefix,
        );
        assert!(parquet.contains(
            "FORMAT AS PARQUET PARALLEL ON MAXFILESIZE 256 MB MANIFEST VERBOSE ALLOWOVERWRITE \
             ENCRYPTED KMS_KEY_ID 'k-1'"
        ));
        assert!(!parquet.contains("GZIP") && !parquet.contains("HEADER"));
    }

    #[test]
    fn backslashes_and_quotes_are_doubled() {
        assert_eq!(
            unload_literal(r"select 'a\\b''c'"),
            r"'select ''a\\\\b''''c'''"
        );
    }
}
