//! The message corpus in tests/messages/ is judged twice: here by the parser, and in
//! tests/python/test_message_schema.py by schema/message.json. Both must agree on every file,
//! which keeps the published schema true to the parser.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use redshift_export_worker::config::CompatSettings;
use redshift_export_worker::message;

fn corpus(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/messages")
        .join(kind);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            (
                path.file_name().unwrap().to_string_lossy().to_string(),
                std::fs::read(&path).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(files.len() >= 5, "corpus {kind} is too small");
    files
}

fn compat() -> CompatSettings {
    CompatSettings {
        sample_template: Some("product_detail_by_sku".into()),
        sample_params: [("sku".into(), "sku".into())].into(),
    }
}

#[test]
fn valid_messages_parse() {
    for (name, body) in corpus("valid") {
        if let Err(e) = message::parse(&body, "msg-1", 1 << 20, &compat()) {
            panic!("{name}: {e}");
        }
    }
}

#[test]
fn invalid_messages_are_rejected_with_a_code() {
    for (name, body) in corpus("invalid") {
        match message::parse(&body, "msg-1", 1 << 20, &compat()) {
            Ok(r) => panic!("{name} was accepted: {r:?}"),
            Err(e) => assert!(!e.code.is_empty() && !e.message.is_empty(), "{name}"),
        }
    }
}
