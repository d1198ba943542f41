//! `submit`: check a request exactly as the worker will and enqueue it.

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde_json::{Value, json};

use super::{unavailable, usage};
use crate::aws::{AwsResultExt, Clients};
use crate::config::Settings;
use crate::message::{self, Format, Layout};
use crate::metrics::Metrics;

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Name of a configured query template.
    #[arg(long)]
    query: String,
    /// A template parameter, as NAME=VALUE (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// A recipient (repeatable); the configured default recipients otherwise.
    #[arg(long = "email", value_name = "ADDRESS")]
    emails: Vec<String>,
    /// A configured event destination to tell when the export ends (repeatable); with no
    /// --email, no email is sent (docs/EVENTS.md).
    #[arg(long = "event", value_name = "DESTINATION")]
    events: Vec<String>,
    #[arg(long, value_enum, default_value = "csv")]
    format: FormatArg,
    /// Archive layout; the configured default otherwise.
    #[arg(long, value_enum)]
    layout: Option<LayoutArg>,
    /// Request id; a new UUID otherwise.
    #[arg(long)]
    request_id: Option<String>,
    #[arg(long, default_value = "cli")]
    requested_by: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Csv,
    Json,
    Parquet,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LayoutArg {
    Single,
    Parts,
}

pub(super) async fn run(settings: Settings, args: Args) -> ExitCode {
    let (request_id, text) = match body(&args) {
        Ok(b) => b,
        Err(e) => return usage(e),
    };
    if let Err(e) = validate(&settings, &request_id, &text) {
        return usage(e);
    }
    let clients = Clients::new(&settings, &Metrics::new()).await;
    let sent = clients
        .sqs
        .send_message()
        .queue_url(&settings.queue.url)
        .message_body(text)
        .send()
        .await
        .aws("sqs", "SendMessage");
    match sent {
        Ok(_) => {
            println!("{request_id}");
            ExitCode::SUCCESS
        }
        Err(e) => unavailable(e),
    }
}

/// The request id and the message body (contract version 1).
fn body(args: &Args) -> Result<(String, String), String> {
    let mut values = BTreeMap::new();
    for p in &args.params {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| format!("--param {p:?} is not NAME=VALUE"))?;
        values.insert(k.to_string(), Value::String(v.to_string()));
    }
    let request_id = args
        .request_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let format = match args.format {
        FormatArg::Csv => Format::Csv,
        FormatArg::Json => Format::Json,
        FormatArg::Parquet => Format::Parquet,
    };
    let mut body = json!({
        "version": 1,
        "request_id": request_id,
        "query": args.query,
        "params": values,
        "format": format,
        "requested_by": args.requested_by,
    });
    if let Some(layout) = args.layout {
        body["layout"] = json!(match layout {
            LayoutArg::Single => Layout::Single,
            LayoutArg::Parts => Layout::Parts,
        });
    }
    if !args.emails.is_empty() || !args.events.is_empty() {
        let mut notify = serde_json::Map::new();
        if !args.emails.is_empty() {
            notify.insert("email".into(), json!(args.emails));
        }
        if !args.events.is_empty() {
            notify.insert("events".into(), json!(args.events));
        }
        body["notify"] = Value::Object(notify);
    }
    Ok((request_id, body.to_string()))
}

/// Checks the request exactly as the worker will, so a bad one never reaches the queue.
fn validate(settings: &Settings, request_id: &str, text: &str) -> Result<(), String> {
    let request = message::parse(
        text.as_bytes(),
        request_id,
        settings.queue.max_message_bytes,
        &settings.compat,
    )
    .map_err(|e| format!("invalid request ({}): {}", e.code, e.message))?;
    crate::policy::destinations(settings, &request)
        .map_err(|e| format!("invalid request ({}): {e}", e.code()))?;
    if let message::QuerySource::Template { name, params } = &request.query {
        let template = settings
            .templates
            .get(name)
            .ok_or_else(|| format!("no query template named {name:?}"))?;
        template
            .render(params)
            .map_err(|e| format!("invalid request ({}): {}", e.code, e.message))?;
    }
    Ok(())
}
