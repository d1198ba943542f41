//! The SQS message contract (version 1, and the AWS sample's shape through a configured
//! mapping) parsed into an [`ExportRequest`] of validated domain types. `schema/message.json`
//! is the same contract as JSON Schema.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use crate::config::{CompatSettings, Layout};

/// A request id: `[A-Za-z0-9._-]{1,128}`. It keys DynamoDB and is part of S3 keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(String);

impl RequestId {
    pub fn parse(s: &str) -> Result<RequestId, String> {
        let ok = (1..=128).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && s != "."
            && s != "..";
        if ok {
            Ok(RequestId(s.to_string()))
        } else {
            Err(format!(
                "request id {s:?} must match [A-Za-z0-9._-]{{1,128}}"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A syntactically valid email address (RFC 5321 as lettre checks it), ASCII only as SES
/// requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress(lettre::Address);

impl EmailAddress {
    pub fn parse(s: &str) -> Result<EmailAddress, String> {
        if !s.is_ascii() {
            return Err(format!("{s:?} is not an ASCII email address"));
        }
        s.parse::<lettre::Address>()
            .map(EmailAddress)
            .map_err(|e| format!("{s:?} is not an email address: {e}"))
    }

    pub fn domain(&self) -> &str {
        self.0.domain()
    }

    pub fn address(&self) -> &lettre::Address {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Data format of the exported file(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Json,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub enum QuerySource {
    /// A configured template and the raw parameter values (checked by the template).
    Template {
        name: String,
        params: BTreeMap<String, Value>,
    },
    /// A raw SELECT (only when the configuration allows it).
    Sql(String),
}

/// One validated export request.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRequest {
    pub request_id: RequestId,
    pub query: QuerySource,
    pub format: Format,
    /// None: the configured default.
    pub layout: Option<Layout>,
    /// Empty: the configured default recipients. Not yet checked against the allow-list.
    pub recipients: Vec<EmailAddress>,
    pub requested_by: Option<String>,
}

/// What a request asked for, in one canonical form: stored in the state item so that a later
/// message with the same request id can be told apart from a true redelivery. The form is a
/// version 1 message without its request id, so the sweeper can send the request again
/// ([`redrive_body`]) when its message is gone.
#[derive(serde::Serialize)]
struct Canonical<'a> {
    version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<&'a BTreeMap<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sql: Option<&'a str>,
    format: Format,
    #[serde(skip_serializing_if = "Option::is_none")]
    layout: Option<Layout>,
    #[serde(skip_serializing_if = "Option::is_none")]
    notify: Option<CanonicalNotify>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requested_by: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct CanonicalNotify {
    email: Vec<String>,
}

/// The canonical form of a request and its fingerprint (SHA-256 of that form, hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprinted {
    pub canonical: String,
    pub fingerprint: String,
}

impl Fingerprinted {
    /// The fingerprint of a message that is not a valid request: its raw body, so that a
    /// redelivery of the same invalid message is recognised and any other message is not.
    pub fn of_invalid(body: &[u8]) -> Fingerprinted {
        Fingerprinted {
            canonical: String::new(),
            fingerprint: format!("body:{}", hex_sha256(body)),
        }
    }
}

/// SHA-256 of `bytes` in lowercase hex.
pub(crate) fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A message body for a stored canonical request: the same request (the same fingerprint)
/// under its request id.
pub fn redrive_body(canonical: &str, request_id: &RequestId) -> Result<String, String> {
    let mut message: serde_json::Map<String, Value> = serde_json::from_str(canonical)
        .map_err(|e| format!("the stored request is not a JSON object: {e}"))?;
    message.insert(
        "request_id".into(),
        Value::String(request_id.as_str().to_string()),
    );
    Ok(Value::Object(message).to_string())
}

impl ExportRequest {
    /// The request in canonical JSON (fields in a fixed order, parameters sorted by name;
    /// parameter values are scalars, so their text is fixed too) and its fingerprint.
    pub fn fingerprinted(&self) -> Fingerprinted {
        let (query, params, sql) = match &self.query {
            QuerySource::Template { name, params } => (Some(name.as_str()), Some(params), None),
            QuerySource::Sql(sql) => (None, None, Some(sql.as_str())),
        };
        let canonical = Canonical {
            version: 1,
            query,
            params,
            sql,
            format: self.format,
            layout: self.layout,
            notify: (!self.recipients.is_empty()).then(|| CanonicalNotify {
                email: self.recipients.iter().map(ToString::to_string).collect(),
            }),
            requested_by: self.requested_by.as_deref(),
        };
        #[expect(
            clippy::expect_used,
            reason = "serialising strings, scalars and string-keyed maps into a String cannot fail"
        )]
        let canonical = serde_json::to_string(&canonical).expect("canonical request");
        let fingerprint = format!("sha256:{}", hex_sha256(canonical.as_bytes()));
        Fingerprinted {
            canonical,
            fingerprint,
        }
    }

    /// The template name, or `sql` for raw SQL, for records and metrics.
    pub fn query_name(&self) -> &str {
        match &self.query {
            QuerySource::Template { name, .. } => name,
            QuerySource::Sql(_) => "sql",
        }
    }
}

/// Why a message is not a valid request. `request_id` is set when one could be determined,
/// so the failure can be recorded against it; otherwise the message is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct MessageError {
    /// Stable, machine-readable.
    pub code: &'static str,
    pub message: String,
    pub request_id: Option<RequestId>,
}

/// Version 1 of the contract.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageV1 {
    version: u32,
    #[expect(
        dead_code,
        reason = "read from the raw JSON first; declared so that deny_unknown_fields accepts it"
    )]
    request_id: Option<String>,
    query: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, Value>,
    sql: Option<String>,
    format: Option<Format>,
    layout: Option<Layout>,
    notify: Option<Notify>,
    requested_by: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Notify {
    #[serde(default)]
    email: Vec<String>,
}

/// Longest template name a message may give: names are echoed in records, logs and emails.
pub const MAX_NAME: usize = 64;

/// Whether `name` can be a template name: `[A-Za-z0-9_.-]{1,64}`. Configured templates are
/// held to the same rule, so a name outside it can never match one.
pub fn is_template_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// At most this many recipients per request (SES's per-message limit).
pub const MAX_RECIPIENTS: usize = 50;

/// Parses a message body. `message_id` (the SQS MessageId) is the default request id.
pub fn parse(
    body: &[u8],
    message_id: &str,
    max_bytes: usize,
    compat: &CompatSettings,
) -> Result<ExportRequest, MessageError> {
    let fail = |code, message: String, request_id: Option<RequestId>| MessageError {
        code,
        message,
        request_id,
    };
    if body.len() > max_bytes {
        return Err(fail(
            "message_too_large",
            format!("message is {} bytes; the limit is {max_bytes}", body.len()),
            None,
        ));
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        fail(
            "invalid_encoding",
            format!("message is not UTF-8: {e}"),
            None,
        )
    })?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| fail("invalid_json", format!("message is not JSON: {e}"), None))?;
    let Value::Object(object) = &value else {
        return Err(fail(
            "invalid_message",
            "message is not a JSON object".into(),
            None,
        ));
    };
    // The request id is found first, so that every later error can be recorded against it.
    let id_field = if object.contains_key("version") {
        "request_id"
    } else {
        "requestid"
    };
    let request_id = match object.get(id_field) {
        None | Some(Value::Null) => {
            RequestId::parse(message_id).map_err(|e| fail("invalid_request_id", e, None))?
        }
        Some(Value::String(s)) => {
            RequestId::parse(s).map_err(|e| fail("invalid_request_id", e, None))?
        }
        Some(other) => {
            return Err(fail(
                "invalid_request_id",
                format!("{id_field} must be a string, got {other}"),
                None,
            ));
        }
    };
    let fail = |code, message: String| fail(code, message, Some(request_id.clone()));

    if !object.contains_key("version") {
        return parse_sample(object, request_id.clone(), compat)
            .map_err(|(code, message)| fail(code, message));
    }
    let m: MessageV1 =
        serde_json::from_value(value).map_err(|e| fail("invalid_message", e.to_string()))?;
    if m.version != 1 {
        return Err(fail(
            "unsupported_version",
            format!(
                "message version {} is not supported (expected 1)",
                m.version
            ),
        ));
    }
    if let Some((name, _)) = m
        .params
        .iter()
        .find(|(_, v)| !(v.is_string() || v.is_number() || v.is_boolean()))
    {
        return Err(fail(
            "invalid_message",
            format!("parameter {name} must be a string, number or boolean"),
        ));
    }
    if let Some(name) = &m.query
        && !is_template_name(name)
    {
        return Err(fail(
            "invalid_message",
            format!(
                "query must be a template name of at most {MAX_NAME} characters from [A-Za-z0-9_.-]"
            ),
        ));
    }
    let query = match (m.query, m.sql) {
        (Some(name), None) => QuerySource::Template {
            name,
            params: m.params,
        },
        (None, Some(sql)) if m.params.is_empty() => QuerySource::Sql(sql),
        (None, Some(_)) => {
            return Err(fail(
                "invalid_message",
                "params cannot be used with sql".into(),
            ));
        }
        (Some(_), Some(_)) => {
            return Err(fail(
                "invalid_message",
                "give either query or sql, not both".into(),
            ));
        }
        (None, None) => {
            return Err(fail(
                "invalid_message",
                "query (a template name) is required".into(),
            ));
        }
    };
    let recipients = m.notify.map(|n| n.email).unwrap_or_default();
    if recipients.len() > MAX_RECIPIENTS {
        return Err(fail(
            "too_many_recipients",
            format!("{} recipients; at most {MAX_RECIPIENTS}", recipients.len()),
        ));
    }
    // The address itself stays out of the error: errors are logged and stored.
    let recipients = recipients
        .iter()
        .enumerate()
        .map(|(i, r)| {
            EmailAddress::parse(r).map_err(|_| {
                fail(
                    "invalid_recipient",
                    format!(
                        "recipient {} of notify.email is not a valid ASCII email address",
                        i + 1
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(by) = &m.requested_by
        && (by.chars().count() > 256 || by.chars().any(char::is_control))
    {
        return Err(fail(
            "invalid_message",
            "requested_by must be at most 256 printable characters".into(),
        ));
    }
    Ok(ExportRequest {
        request_id,
        query,
        format: m.format.unwrap_or(Format::Csv),
        layout: m.layout,
        recipients,
        requested_by: m.requested_by,
    })
}

/// The AWS sample's `{"requestid": …, "sku": …, …}`, mapped onto the configured template.
fn parse_sample(
    object: &serde_json::Map<String, Value>,
    request_id: RequestId,
    compat: &CompatSettings,
) -> Result<ExportRequest, (&'static str, String)> {
    let Some(template) = &compat.sample_template else {
        return Err((
            "invalid_message",
            "message has no version and the compatibility mapping for sample messages is not configured".into(),
        ));
    };
    let mut params = BTreeMap::new();
    for (field, value) in object {
        if field == "requestid" {
            continue;
        }
        // The sample's other fields (productname, createdate) carry nothing the query uses.
        if let Some(param) = compat.sample_params.get(field) {
            params.insert(param.clone(), value.clone());
        }
    }
    Ok(ExportRequest {
        request_id,
        query: QuerySource::Template {
            name: template.clone(),
            params,
        },
        format: Format::Csv,
        layout: None,
        recipients: Vec::new(),
        requested_by: Some("aws-sample".into()),
    })
}

#[cfg(test)]
mod tests {
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
            (br#"{"version":1,"request_id":"bad id!","query":"q"}"#, "invalid_request_id", None),
            (br#"{"version":1,"request_id":7,"query":"q"}"#, "invalid_request_id", None),
            (br#"{"version":2,"request_id":"r","query":"q"}"#, "unsupported_version", Some("r")),
            (br#"{"version":1,"request_id":"r"}"#, "invalid_message", Some("r")),
            (br#"{"version":1,"request_id":"r","query":"q","sql":"select 1"}"#, "invalid_message", Some("r")),
            (br#"{"version":1,"request_id":"r","query":"q","surprise":1}"#, "invalid_message", Some("r")),
            (br#"{"version":1,"request_id":"r","query":"q","format":"xml"}"#, "invalid_message", Some("r")),
            (br#"{"version":1,"request_id":"r","query":"q","notify":{"email":["nope"]}}"#, "invalid_recipient", Some("r")),
            (r#"{"version":1,"request_id":"r","query":"q","notify":{"email":["é@example.com"]}}"#.as_bytes(), "invalid_recipient", Some("r")),
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
        let a =
            parse_str(r#"{"version":1,"request_id":"r","query":"q","params":{"n":1}}"#).unwrap();
        let b =
            parse_str(r#"{"version":1,"request_id":"r","query":"q","params":{"n":2}}"#).unwrap();
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
}
