//! Version 1 of the message contract (`"version": 1`), as `schema/message.json` states it.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{
    EmailAddress, ExportRequest, Format, Layout, MAX_NAME, MAX_RECIPIENTS, QuerySource, RequestId,
    is_template_name,
};

/// Longest `requested_by`, in characters: it is echoed in records and logs.
const MAX_REQUESTED_BY: usize = 256;

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

/// A failure: its code and what to tell the sender.
type Failure = (&'static str, String);

fn invalid(message: impl Into<String>) -> Failure {
    ("invalid_message", message.into())
}

/// Reads a versioned message whose request id was already found.
pub(super) fn parse(value: Value, request_id: &RequestId) -> Result<ExportRequest, Failure> {
    let m: MessageV1 = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
    if m.version != 1 {
        return Err((
            "unsupported_version",
            format!(
                "message version {} is not supported (expected 1)",
                m.version
            ),
        ));
    }
    if let Some(by) = &m.requested_by
        && (by.chars().count() > MAX_REQUESTED_BY || by.chars().any(char::is_control))
    {
        return Err(invalid(format!(
            "requested_by must be at most {MAX_REQUESTED_BY} printable characters"
        )));
    }
    let recipients = recipients(m.notify.map(|n| n.email).unwrap_or_default())?;
    Ok(ExportRequest {
        request_id: request_id.clone(),
        query: query_source(m.query, m.sql, m.params)?,
        format: m.format.unwrap_or(Format::Csv),
        layout: m.layout,
        recipients,
        requested_by: m.requested_by,
    })
}

/// A template with its parameters, or raw SQL without any.
fn query_source(
    query: Option<String>,
    sql: Option<String>,
    params: BTreeMap<String, Value>,
) -> Result<QuerySource, Failure> {
    if let Some((name, _)) = params
        .iter()
        .find(|(_, v)| !(v.is_string() || v.is_number() || v.is_boolean()))
    {
        return Err(invalid(format!(
            "parameter {name} must be a string, number or boolean"
        )));
    }
    if let Some(name) = &query
        && !is_template_name(name)
    {
        return Err(invalid(format!(
            "query must be a template name of at most {MAX_NAME} characters from [A-Za-z0-9_.-]"
        )));
    }
    match (query, sql) {
        (Some(name), None) => Ok(QuerySource::Template { name, params }),
        (None, Some(sql)) if params.is_empty() => Ok(QuerySource::Sql(sql)),
        (None, Some(_)) => Err(invalid("params cannot be used with sql")),
        (Some(_), Some(_)) => Err(invalid("give either query or sql, not both")),
        (None, None) => Err(invalid("query (a template name) is required")),
    }
}

/// The recipients as addresses. The address itself stays out of the error: errors are
/// logged and stored.
fn recipients(given: Vec<String>) -> Result<Vec<EmailAddress>, Failure> {
    if given.len() > MAX_RECIPIENTS {
        return Err((
            "too_many_recipients",
            format!("{} recipients; at most {MAX_RECIPIENTS}", given.len()),
        ));
    }
    given
        .iter()
        .enumerate()
        .map(|(i, r)| {
            EmailAddress::parse(r).map_err(|_| {
                (
                    "invalid_recipient",
                    format!(
                        "recipient {} of notify.email is not a valid ASCII email address",
                        i + 1
                    ),
                )
            })
        })
        .collect()
}
