//! The SQS message contract (version 1, and the AWS sample's shape through a configured
//! mapping) parsed into an [`ExportRequest`] of validated domain types. `schema/message.json`
//! is the same contract as JSON Schema.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

mod canonical;
mod sample;
mod v1;

pub use sample::CompatSettings;

pub(crate) use canonical::hex_sha256;
pub use canonical::{Fingerprinted, redrive_body};

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
    /// Parquet files as UNLOAD writes them; never joined (see [`Layout`]).
    Parquet,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Parquet => "parquet",
        }
    }

    /// The layout a request gets when it names none: Parquet files cannot be concatenated,
    /// so they are always one entry per file.
    pub fn default_layout(self, configured: Layout) -> Layout {
        match self {
            Format::Parquet => Layout::Parts,
            Format::Csv | Format::Json => configured,
        }
    }
}

/// Layout of the zip. A Parquet export is always `Parts`: `Single` with Parquet is refused
/// when the message is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// One CSV (or JSON lines) file, header once.
    Single,
    /// One entry per UNLOAD part, each as produced.
    Parts,
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
    /// Event destinations the request names (names from the configuration; checked against
    /// it by the policy). A request that names destinations and no recipients gets no email.
    pub events: Vec<String>,
    pub requested_by: Option<String>,
}

impl ExportRequest {
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

impl MessageError {
    fn new(code: &'static str, message: impl Into<String>, request_id: Option<RequestId>) -> Self {
        MessageError {
            code,
            message: message.into(),
            request_id,
        }
    }
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
    let value = read_object(body, max_bytes)?;
    let Value::Object(object) = &value else {
        return Err(MessageError::new(
            "invalid_message",
            "message is not a JSON object",
            None,
        ));
    };
    // The request id is found first, so that every later error can be recorded against it.
    let versioned = object.contains_key("version");
    let request_id = find_request_id(object, versioned, message_id)?;
    let result = if versioned {
        v1::parse(value, &request_id)
    } else {
        sample::parse(object, &request_id, compat)
    };
    result.map_err(|(code, message)| MessageError::new(code, message, Some(request_id)))
}

/// The body as JSON, within the size limit and as UTF-8.
fn read_object(body: &[u8], max_bytes: usize) -> Result<Value, MessageError> {
    if body.len() > max_bytes {
        return Err(MessageError::new(
            "message_too_large",
            format!("message is {} bytes; the limit is {max_bytes}", body.len()),
            None,
        ));
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        MessageError::new(
            "invalid_encoding",
            format!("message is not UTF-8: {e}"),
            None,
        )
    })?;
    serde_json::from_str(text)
        .map_err(|e| MessageError::new("invalid_json", format!("message is not JSON: {e}"), None))
}

/// The request id the message names (`request_id`, or the sample's `requestid`), or the SQS
/// message id when it names none.
fn find_request_id(
    object: &serde_json::Map<String, Value>,
    versioned: bool,
    message_id: &str,
) -> Result<RequestId, MessageError> {
    let id_field = if versioned { "request_id" } else { "requestid" };
    let invalid = |e: String| MessageError::new("invalid_request_id", e, None);
    match object.get(id_field) {
        None | Some(Value::Null) => RequestId::parse(message_id).map_err(invalid),
        Some(Value::String(s)) => RequestId::parse(s).map_err(invalid),
        Some(other) => Err(invalid(format!("{id_field} must be a string, got {other}"))),
    }
}

#[cfg(test)]
mod tests;
