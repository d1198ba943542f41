//! The message corpus in tests/messages/ is judged twice: here by the parser, and in
//! tests/python/test_message_schema.py by schema/message.json. Both must agree on every file,
//! which keeps the published schema true to the parser.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use redshift_export_worker::message;
use redshift_export_worker::message::CompatSettings;

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

/// Each invalid message is named `<expected error code>--<what is wrong>.json`.
#[test]
fn invalid_messages_are_rejected_with_the_code_their_name_gives() {
    let mut wrong = Vec::new();
    for (name, body) in corpus("invalid") {
        let (expected, _) = name
            .split_once("--")
            .unwrap_or_else(|| panic!("{name}: name it <error code>--<what>.json"));
        match message::parse(&body, "msg-1", 1 << 20, &compat()) {
            Ok(r) => panic!("{name} was accepted: {r:?}"),
            Err(e) if e.code == expected && !e.message.is_empty() => {}
            Err(e) => wrong.push(format!("{name}: got {} ({})", e.code, e.message)),
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// One case of tests/messages/hostile.jsonl: a body (with `{rid}` standing for a fresh
/// request id), the parser's verdict (`ok` or an error code) and what the worker must make of
/// it: `COMPLETED`, `FAILED <code>` or `DLQ <code>`.
#[derive(Debug, serde::Deserialize)]
pub struct Case {
    pub name: String,
    pub body: String,
    pub parse: String,
    pub outcome: String,
    pub rows: Option<u64>,
}

pub fn hostile_corpus() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/messages/hostile.jsonl");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_hostile_corpus_parses_as_recorded() {
    let cases = hostile_corpus();
    assert!(cases.len() >= 120, "{} cases", cases.len());
    for case in &cases {
        let body = case.body.replace("{rid}", "hostile-case");
        let parsed = message::parse(body.as_bytes(), "msg-1", 256 * 1024, &compat());
        match (&parsed, case.parse.as_str()) {
            (Ok(_), "ok") => {}
            (Err(e), code) if e.code == code => {
                // Without a request id a message can only be dead-lettered.
                let expected = if e.request_id.is_some() {
                    format!("FAILED {code}")
                } else {
                    format!("DLQ {code}")
                };
                assert_eq!(case.outcome, expected, "{}", case.name);
            }
            _ => panic!(
                "{}: parsed as {parsed:?}, recorded {}",
                case.name, case.parse
            ),
        }
    }
}
