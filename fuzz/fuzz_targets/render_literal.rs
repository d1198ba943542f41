//! Any string parameter, rendered into a template and wrapped in UNLOAD, must come back out of
//! Redshift's lexical rules (as redshift-data-local implements them) as exactly one literal
//! with exactly that value.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use redshift_data_local::sqltext::{Token, tokenize};
use redshift_data_local::unload::parse::parse_unload;
use redshift_export_worker::config::RedshiftSettings;
use redshift_export_worker::message::{Format, Layout};
use redshift_export_worker::template::TemplateSpec;
use redshift_export_worker::unload;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else { return };
    let template: TemplateSpec =
        serde_json::from_value(json!({"sql": "SELECT a FROM t WHERE a = :v AND b = 'x'", "params": {"v": {"type": "string"}}}))
            .unwrap();
    let Ok(select) = template.render(&BTreeMap::from([("v".to_string(), Value::String(value.to_string()))])) else {
        assert!(value.contains('\0'), "only NUL is rejected");
        return;
    };
    let redshift: RedshiftSettings = serde_json::from_value(json!({"cluster_identifier": "c", "database": "d"})).unwrap();
    let sql = unload::build(&select, Format::Csv, Layout::Single, &redshift, "bucket", "unload/r/1/");
    let spec = parse_unload(&sql).expect("the UNLOAD parses");
    let literals: Vec<String> = tokenize(&spec.select)
        .expect("the SELECT lexes")
        .into_iter()
        .filter_map(|t| match t.token {
            Token::Literal(v) => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(literals, vec![value.to_string(), "x".to_string()]);
});
