//! The canonical form of a request: a version 1 message without its request id, with fields
//! in a fixed order and parameters sorted by name. It is stored in the state item with its
//! SHA-256 fingerprint, so that a later message with the same request id can be told apart
//! from a true redelivery, and so that the sweeper can send the request again when its
//! message is gone.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{ExportRequest, Format, Layout, QuerySource, RequestId};

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
    notify: Option<CanonicalNotify<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requested_by: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct CanonicalNotify<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    email: Vec<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    events: &'a [String],
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
            notify: (!self.recipients.is_empty() || !self.events.is_empty()).then(|| {
                CanonicalNotify {
                    email: self.recipients.iter().map(ToString::to_string).collect(),
                    events: &self.events,
                }
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
}
