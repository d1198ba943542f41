//! The SQS message contract (version 1, and the AWS sample's shape through a configured
//! mapping) parsed into an [`ExportRequest`] of validated domain types. `schema/message.json`
//! is the same contract as JSON Schema.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use crate::config::{CompatSettings, Layout};

mod canonical;

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
mod tests;
