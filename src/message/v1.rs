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
    /// Names of configured event destinations.
    #[serde(default)]
    events: Vec<String>,
}

/// Most event destinations one request may name.
const MAX_EVENT_DESTINATIONS: usize = 10;

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
    let format = m.format.unwrap_or(Format::Csv);
    if format == Format::Parquet && m.layout == Some(Layout::Single) {
        return Err(invalid(
            "layout single cannot hold format parquet: Parquet files cannot be concatenated \
             into one; use layout parts (the default for parquet)",
        ));
    }
    let (email, events) = m.notify.map(|n| (n.email, n.events)).unwrap_or_default();
    let recipients = recipients(email)?;
    Ok(ExportRequest {
        request_id: request_id.clone(),
        query: query_source(m.query, m.sql, m.params)?,
        format,
        layout: m.layout,
        recipients,
        events: event_destinations(events)?,
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

/// Event destination names, sorted and without repeats. Only names: where they lead is
/// configuration, never the message's to say.
fn event_destinations(mut names: Vec<String>) -> Result<Vec<String>, Failure> {
    if names.len() > MAX_EVENT_DESTINATIONS {
        return Err(invalid(format!(
            "notify.events names {} destinations; at most {MAX_EVENT_DESTINATIONS}",
            names.len()
        )));
    }
    if let Some(i) = names
        .iter()
        .position(|n| !crate::config::is_destination_name(n))
    {
        return Err(invalid(format!(
            "destination {} of notify.events must be a configured name ([A-Za-z0-9_-], at most 64 characters)",
            i + 1
        )));
    }
    names.sort();
    names.dedup();
    Ok(names)
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
