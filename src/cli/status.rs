//! `status`: a request's state, its history, and a fresh link to its archive.

use std::process::ExitCode;

use serde_json::json;

use super::{not_there, services, unavailable};
use crate::config::Settings;
use crate::presign::{self, Link};
use crate::services::Services;
use crate::state::{Event, StateItem, timestamp};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    request_id: String,
    /// Also list every recorded transition.
    #[arg(long)]
    all: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Print a fresh presigned link to the archive.
    #[arg(long)]
    url: bool,
}

pub(super) async fn run(settings: Settings, args: Args) -> ExitCode {
    let svc = match services(settings).await {
        Ok(svc) => svc,
        Err(code) => return code,
    };
    let request_id = args.request_id.as_str();
    let item = match svc.state.load(request_id).await {
        Ok(Some(item)) => item,
        Ok(None) => return not_there(format!("no request {request_id:?}")),
        Err(e) => return unavailable(e),
    };
    let history = if args.all {
        match svc.state.history(request_id).await {
            Ok(h) => h,
            Err(e) => return unavailable(e),
        }
    } else {
        Vec::new()
    };
    let link = if args.url {
        match link(&svc, &item).await {
            Ok(link) => Some(link),
            Err(code) => return code,
        }
    } else {
        None
    };
    if args.json {
        let mut out = json!({ "state": item });
        if args.all {
            out["history"] = json!(history);
        }
        if let Some(link) = &link {
            out["url"] = json!(link.url);
            out["url_expires_at"] = json!(timestamp(link.expires_at));
        }
        println!("{out:#}");
    } else {
        print_state(&item, &svc.settings.archive.bucket);
        if args.all {
            print_history(&history);
        }
        if let Some(link) = &link {
            println!("link ({}):\n{}", timestamp(link.expires_at), link.url);
        }
    }
    ExitCode::SUCCESS
}

/// A fresh presigned link to the request's archive.
async fn link(svc: &Services, item: &StateItem) -> Result<Link, ExitCode> {
    let Some(key) = &item.archive_key else {
        return Err(not_there(format!(
            "request {} has no archive yet ({})",
            item.request_id,
            item.status.as_str()
        )));
    };
    presign::archive_link(svc, key, &item.request_id)
        .await
        .map_err(unavailable)
}

fn print_history(history: &[Event]) {
    println!("history:");
    for e in history {
        let from = if e.from.is_empty() { "-" } else { &e.from };
        println!(
            "  {}  {from:>9} → {:<9}  {}  {}",
            e.at, e.to, e.worker, e.detail
        );
    }
}

fn print_state(item: &StateItem, bucket: &str) {
    let line = |k: &str, v: String| println!("{k:<14}{v}");
    line("request", item.request_id.clone());
    line(
        "status",
        format!("{} (attempt {})", item.status.as_str(), item.attempt),
    );
    line("query", item.query.clone().unwrap_or_default());
    if let Some(by) = &item.requested_by {
        line("requested by", by.clone());
    }
    line("created", item.created_at.clone());
    line("updated", item.updated_at.clone());
    if let Some(id) = &item.statement_id {
        line("statement", id.clone());
    }
    if let Some(rows) = item.rows {
        line("rows", rows.to_string());
    }
    if let Some(key) = &item.archive_key {
        let size = item
            .archive_bytes
            .map(crate::notify::templates::human_size)
            .unwrap_or_default();
        line("archive", format!("s3://{bucket}/{key} ({size})"));
    }
    if let Some(sha) = &item.archive_sha256 {
        line("sha256", sha.clone());
    }
    if !item.events_due.is_empty() {
        line("events due", item.events_due.join(", "));
    }
    if let Some(at) = &item.url_expires_at {
        line("link expires", at.clone());
    }
    if let Some(code) = &item.error_code {
        line(
            "error",
            format!("{code}: {}", item.error_message.clone().unwrap_or_default()),
        );
    }
}
