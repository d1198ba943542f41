//! Tests of the message parser and of the canonical form.

use super::*;

fn compat() -> CompatSettings {
    CompatSettings {
        sample_template: Some("product_detail_by_sku".into()),
        sample_params: [("sku".to_string(), "sku".to_string())].into(),
    }
}

fn parse_str(s: &str) -> Result<ExportRequest, MessageError> {
    parse(s.as_bytes(), "msg-1", 1024, &compat())
}

#[test]
fn a_full_v1_message_parses() {
    let r = parse_str(
        r#"{"version":1,"request_id":"2f1c0d9e-5b7a","query":"q","params":{"sku":"FLOWER12"},
            "format":"json","layout":"parts","notify":{"email":["a@example.com"]},"requested_by":"portal"}"#,
    )
    .unwrap();
    assert_eq!(r.request_id.as_str(), "2f1c0d9e-5b7a");
    assert_eq!(
        r.query,
        QuerySource::Template {
            name: "q".into(),
            params: [("sku".into(), "FLOWER12".into())].into()
        }
    );
    assert_eq!((r.format, r.layout), (Format::Json, Some(Layout::Parts)));
    assert_eq!(r.recipients[0].to_string(), "a@example.com");
}

#[test]
fn defaults_request_id_to_the_message_id() {
    let r = parse_str(r#"{"version":1,"query":"q"}"#).unwrap();
    assert_eq!(r.request_id.as_str(), "msg-1");
    assert_eq!(r.format, Format::Csv);
}

#[test]
fn sample_messages_map_onto_the_template() {
    let r = parse_str(
        r#"{"requestid":"r1","sku":"FLOWER12","productname":"x","createdate":"2024-01-01"}"#,
    )
    .unwrap();
    assert_eq!(r.request_id.as_str(), "r1");
    assert_eq!(
        r.query,
        QuerySource::Template {
            name: "product_detail_by_sku".into(),
            params: [("sku".into(), "FLOWER12".into())].into()
        }
    );
    let off = parse(
        br#"{"requestid":"r1","sku":"x"}"#,
        "m",
        1024,
        &CompatSettings::default(),
    )
    .unwrap_err();
    assert_eq!(
        (off.code, off.request_id.unwrap().as_str()),
        ("invalid_message", "r1")
    );
}

#[test]
fn errors_have_codes_and_keep_the_request_id_when_known() {
    let cases: &[(&[u8], &str, Option<&str>)] = &[
        (b"\xff\xfe", "invalid_encoding", None),
        (b"not json", "invalid_json", None),
        (b"[1]", "invalid_message", None),
        (
            br#"{"version":1,"request_id":"bad id!","query":"q"}"#,
            "invalid_request_id",
            None,
        ),
        (
            br#"{"version":1,"request_id":7,"query":"q"}"#,
            "invalid_request_id",
            None,
        ),
        (
            br#"{"version":2,"request_id":"r","query":"q"}"#,
            "unsupported_version",
            Some("r"),
        ),
        (
            br#"{"version":1,"request_id":"r"}"#,
            "invalid_message",
            Some("r"),
        ),
        (
            br#"{"version":1,"request_id":"r","query":"q","sql":"select 1"}"#,
            "invalid_message",
            Some("r"),
        ),
        (
            br#"{"version":1,"request_id":"r","query":"q","surprise":1}"#,
            "invalid_message",
            Some("r"),
        ),
        (
            br#"{"version":1,"request_id":"r","query":"q","format":"xml"}"#,
            "invalid_message",
            Some("r"),
        ),
        (
            br#"{"version":1,"request_id":"r","query":"q","notify":{"email":["nope"]}}"#,
            "invalid_recipient",
            Some("r"),
        ),
        (
            r#"{"version":1,"request_id":"r","query":"q","notify":{"email":["é@example.com"]}}"#
                .as_bytes(),
            "invalid_recipient",
            Some("r"),
        ),
    ];
    for (body, code, id) in cases {
        let e = parse(body, "msg-1", 1024, &compat()).unwrap_err();
        assert_eq!(e.code, *code, "{}", String::from_utf8_lossy(body));
        assert_eq!(
            e.request_id.as_ref().map(RequestId::as_str),
            *id,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let big = vec![b' '; 2048];
    assert_eq!(
        parse(&big, "m", 1024, &compat()).unwrap_err().code,
        "message_too_large"
    );
    let many: Vec<String> = (0..51).map(|i| format!("\"u{i}@example.com\"")).collect();
    let body = format!(
        r#"{{"version":1,"request_id":"r","query":"q","notify":{{"email":[{}]}}}}"#,
        many.join(",")
    );
    assert_eq!(
        parse(body.as_bytes(), "m", 1 << 20, &compat())
            .unwrap_err()
            .code,
        "too_many_recipients"
    );
}

#[test]
fn a_redriven_request_is_the_same_request() {
    for body in [
        r#"{"version":1,"request_id":"r1","query":"q","params":{"b":2,"a":"x"},"layout":"parts","notify":{"email":["a@example.com"]},"requested_by":"p"}"#,
        r#"{"version":1,"request_id":"r1","sql":"select 1","format":"json"}"#,
        r#"{"requestid":"r1","sku":"FLOWER12","productname":"x"}"#,
    ] {
        let original = parse_str(body).unwrap();
        let asked = original.fingerprinted();
        let again = redrive_body(&asked.canonical, &original.request_id).unwrap();
        let redriven = parse_str(&again).unwrap();
        assert_eq!(redriven, original, "{again}");
        assert_eq!(redriven.fingerprinted(), asked);
    }
    let a = parse_str(r#"{"version":1,"request_id":"r","query":"q","params":{"n":1}}"#).unwrap();
    let b = parse_str(r#"{"version":1,"request_id":"r","query":"q","params":{"n":2}}"#).unwrap();
    assert_ne!(a.fingerprinted().fingerprint, b.fingerprinted().fingerprint);
}

#[test]
fn request_ids_are_strict() {
    for ok in ["a", "A.b_c-9", &"x".repeat(128)] {
        assert!(RequestId::parse(ok).is_ok(), "{ok}");
    }
    for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(129), "a\0"] {
        assert!(RequestId::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn event_destinations_are_names_sorted_once_and_never_addresses() {
    let r = parse_str(
        r#"{"version":1,"query":"q","notify":{"events":["replies","partner-a","replies"]}}"#,
    )
    .unwrap();
    assert_eq!(r.events, ["partner-a", "replies"]);
    assert!(r.recipients.is_empty());
    // The canonical form keeps them, so a message naming others is another request.
    let canonical = r.fingerprinted().canonical;
    assert!(
        canonical.contains(r#""notify":{"events":["partner-a","replies"]}"#),
        "{canonical}"
    );
    for hostile in [
        r#"{"version":1,"query":"q","notify":{"events":["https://attacker.example/x"]}}"#,
        r#"{"version":1,"query":"q","notify":{"events":["a b"]}}"#,
        r#"{"version":1,"query":"q","notify":{"events":[""]}}"#,
    ] {
        assert_eq!(
            parse_str(hostile).unwrap_err().code,
            "invalid_message",
            "{hostile}"
        );
    }
}

#[test]
fn a_request_without_events_keeps_its_canonical_form() {
    // Fingerprints recorded before events existed must still match their redeliveries.
    let r = parse_str(r#"{"version":1,"query":"q","notify":{"email":["a@example.com"]}}"#).unwrap();
    assert_eq!(
        r.fingerprinted().canonical,
        r#"{"version":1,"query":"q","params":{},"format":"csv","notify":{"email":["a@example.com"]}}"#
    );
}
