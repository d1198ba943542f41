//! The command line: `run`, `submit`, `status`, `cancel`, `check`, `dlq`. Exit codes: 0 success, 1 the thing asked
//! about is not there or not done, 64 bad usage or configuration (EX_USAGE), 69 a dependency
//! could not be reached (EX_UNAVAILABLE).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use crate::aws::AwsResultExt;
use crate::config::{Layout, Settings};
use crate::job::Services;
use crate::message::{self, Format};
use crate::state::StateItem;
use crate::{presign, telemetry, worker};

#[derive(Debug, Parser)]
#[command(
    name = "redshift-export-worker",
    version,
    about = "Exports Amazon Redshift query results as zip files, on request from SQS"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: process export requests from the queue until SIGTERM or SIGINT.
    Run {
        #[arg(long, short, env = "EXPORT_WORKER_CONFIG")]
        config: PathBuf,
    },
    /// Enqueue a valid export request and print its id.
    Submit {
        #[arg(long, short, env = "EXPORT_WORKER_CONFIG")]
        config: PathBuf,
        /// Name of a configured query template.
        #[arg(long)]
        query: String,
        /// A template parameter, as NAME=VALUE (repeatable).
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// A recipient (repeatable); the configured default recipients otherwise.
        #[arg(long = "email", value_name = "ADDRESS")]
        emails: Vec<String>,
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
    },
    /// Validate the configuration and probe every dependency; non-zero exit on any problem.
    Check {
        #[arg(long, short, env = "EXPORT_WORKER_CONFIG")]
        config: PathBuf,
    },
    /// Ask for a request to be cancelled: its statement is cancelled and it ends CANCELLED.
    Cancel {
        #[arg(long, short, env = "EXPORT_WORKER_CONFIG")]
        config: PathBuf,
        request_id: String,
    },
    /// Show a request's state (and with --all its history).
    Status {
        #[arg(long, short, env = "EXPORT_WORKER_CONFIG")]
        config: PathBuf,
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
    },
    /// Inspect and settle the dead-letter queue.
    Dlq {
        #[arg(long, short, env = "EXPORT_WORKER_CONFIG")]
        config: PathBuf,
        #[command(subcommand)]
        action: DlqCommand,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List the messages with their reason and the state of the request each names.
    List {
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
        /// At most this many messages.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Send messages back to the request queue.
    Redrive(DlqPick),
    /// Record the requests the messages name FAILED (dead_lettered) and remove the messages.
    Fail(DlqPick),
    /// Remove messages.
    Delete(DlqPick),
}

#[derive(Debug, clap::Args)]
struct DlqPick {
    /// SQS message ids, as `dlq list` shows them.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    message_ids: Vec<String>,
    /// Every message in the dead-letter queue.
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Csv,
    Json,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LayoutArg {
    Single,
    Parts,
}

const EX_USAGE: u8 = 64;
const EX_UNAVAILABLE: u8 = 69;

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("redshift-export-worker: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(dispatch(cli.command))
}

fn load(path: &std::path::Path) -> Result<Settings, ExitCode> {
    Settings::load(path).map_err(|e| {
        eprintln!("redshift-export-worker: {e}");
        ExitCode::from(EX_USAGE)
    })
}

impl Command {
    fn config(&self) -> &std::path::Path {
        match self {
            Command::Run { config }
            | Command::Submit { config, .. }
            | Command::Check { config }
            | Command::Cancel { config, .. }
            | Command::Status { config, .. }
            | Command::Dlq { config, .. } => config,
        }
    }
}

async fn dispatch(command: Command) -> ExitCode {
    let settings = match load(command.config()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Command::Run { .. } = command {
        telemetry::init(&settings.logging);
    } else {
        telemetry::init_cli();
    }
    match command {
        Command::Run { .. } => run(settings).await,
        Command::Submit {
            query,
            params,
            emails,
            format,
            layout,
            request_id,
            requested_by,
            ..
        } => {
            let format = match format {
                FormatArg::Csv => Format::Csv,
                FormatArg::Json => Format::Json,
            };
            let layout = layout.map(|l| match l {
                LayoutArg::Single => Layout::Single,
                LayoutArg::Parts => Layout::Parts,
            });
            submit(
                settings,
                query,
                params,
                emails,
                format,
                layout,
                request_id,
                requested_by,
            )
            .await
        }
        Command::Check { .. } => check(settings).await,
        Command::Cancel { request_id, .. } => cancel(settings, &request_id).await,
        Command::Status {
            request_id,
            all,
            json,
            url,
            ..
        } => status(settings, &request_id, all, json, url).await,
        Command::Dlq { action, .. } => dlq(settings, action).await,
    }
}

async fn dlq(settings: Settings, action: DlqCommand) -> ExitCode {
    use crate::dlq::{self, Action};
    let svc = match Services::new(settings).await {
        Ok(svc) => svc,
        Err(e) => {
            eprintln!("redshift-export-worker: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let (action, pick) = match action {
        DlqCommand::List { json, max } => {
            return match dlq::list(&svc, max).await {
                Ok(entries) => {
                    for e in &entries {
                        if json {
                            println!("{}", serde_json::to_string(e).unwrap_or_default());
                        } else {
                            println!(
                                "{}  {}  request {} ({})  received {}x  {}",
                                e.message_id,
                                e.error_code,
                                e.request_id.as_deref().unwrap_or("-"),
                                e.status.as_deref().unwrap_or("not recorded"),
                                e.receive_count,
                                e.error_message
                            );
                        }
                    }
                    if !json {
                        println!("{} message(s)", entries.len());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("redshift-export-worker: {e}");
                    ExitCode::from(EX_UNAVAILABLE)
                }
            };
        }
        DlqCommand::Redrive(p) => (Action::Redrive, p),
        DlqCommand::Fail(p) => (Action::Fail, p),
        DlqCommand::Delete(p) => (Action::Delete, p),
    };
    match dlq::act(&svc, action, &pick.message_ids).await {
        Ok(done) => {
            let mut failed = false;
            for (id, result) in done {
                match result {
                    Ok(what) => println!("ok    {id}: {what}"),
                    Err(why) => {
                        failed = true;
                        println!("FAIL  {id}: {why}");
                    }
                }
            }
            if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("redshift-export-worker: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

async fn run(settings: Settings) -> ExitCode {
    let svc = match Services::new(settings).await {
        Ok(svc) => svc,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(EX_USAGE);
        }
    };
    // The worker must be the one to end a request after its last attempt (see `check`).
    match crate::check::max_receive_count(&svc).await {
        Ok(limit) => {
            if let Err(problem) =
                crate::check::attempts_fit(svc.settings.worker.max_attempts, limit)
            {
                tracing::error!(problem, "cannot start");
                return ExitCode::from(EX_USAGE);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "the queue's redrive policy could not be read; /readyz reports the queue")
        }
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    if let Some(listen) = svc.settings.admin.address()
        && let Err(e) = crate::admin::serve(
            listen,
            svc.metrics.clone(),
            svc.health.clone(),
            stopped.clone(),
        )
        .await
    {
        tracing::error!(%listen, error = %e, "cannot start the admin listener");
        return ExitCode::from(EX_USAGE);
    }
    tokio::spawn(crate::admin::probe_queue(
        svc.clients.sqs.clone(),
        svc.settings.queue.url.clone(),
        svc.health.clone(),
        Duration::from_secs(15),
    ));
    if svc.settings.sweeper.enabled {
        tokio::spawn(crate::sweeper::run(svc.clone(), stopped.clone()));
    }
    crate::systemd::notify("READY=1\nSTATUS=receiving export requests");
    if let Some(interval) = crate::systemd::watchdog_interval() {
        tokio::spawn(async move {
            loop {
                crate::systemd::notify("WATCHDOG=1");
                tokio::time::sleep(interval).await;
            }
        });
    }
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
        }
        crate::systemd::notify("STOPPING=1\nSTATUS=finishing the job in hand");
        let _ = stop.send(true);
        // A second signal exits at once.
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal; exiting now");
        std::process::exit(1);
    });
    worker::run(svc, stopped).await;
    ExitCode::SUCCESS
}

#[allow(clippy::too_many_arguments)]
async fn submit(
    settings: Settings,
    query: String,
    params: Vec<String>,
    emails: Vec<String>,
    format: Format,
    layout: Option<Layout>,
    request_id: Option<String>,
    requested_by: String,
) -> ExitCode {
    let mut values = BTreeMap::new();
    for p in &params {
        let Some((k, v)) = p.split_once('=') else {
            eprintln!("redshift-export-worker: --param {p:?} is not NAME=VALUE");
            return ExitCode::from(EX_USAGE);
        };
        values.insert(k.to_string(), Value::String(v.to_string()));
    }
    let request_id = request_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut body = json!({
        "version": 1,
        "request_id": request_id,
        "query": query,
        "params": values,
        "format": format,
        "requested_by": requested_by,
    });
    if let Some(layout) = layout {
        body["layout"] = json!(layout);
    }
    if !emails.is_empty() {
        body["notify"] = json!({ "email": emails });
    }
    let text = body.to_string();
    // Check the request exactly as the worker will, so a bad one never reaches the queue.
    let parsed = message::parse(
        text.as_bytes(),
        &request_id,
        settings.queue.max_message_bytes,
        &settings.compat,
    );
    let request = match parsed {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "redshift-export-worker: invalid request ({}): {}",
                e.code, e.message
            );
            return ExitCode::from(EX_USAGE);
        }
    };
    if let message::QuerySource::Template { name, params } = &request.query {
        let Some(template) = settings.templates.get(name) else {
            eprintln!("redshift-export-worker: no query template named {name:?}");
            return ExitCode::from(EX_USAGE);
        };
        if let Err(e) = template.render(params) {
            eprintln!(
                "redshift-export-worker: invalid request ({}): {}",
                e.code, e.message
            );
            return ExitCode::from(EX_USAGE);
        }
    }
    let clients = crate::aws::Clients::new(
        &settings.aws,
        settings.queue.wait_secs,
        &crate::metrics::Metrics::new(),
    )
    .await;
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
        Err(e) => {
            eprintln!("redshift-export-worker: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

async fn status(
    settings: Settings,
    request_id: &str,
    all: bool,
    as_json: bool,
    url: bool,
) -> ExitCode {
    let svc = match Services::new(settings).await {
        Ok(svc) => svc,
        Err(e) => {
            eprintln!("redshift-export-worker: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let item = match svc.state.load(request_id).await {
        Ok(Some(item)) => item,
        Ok(None) => {
            eprintln!("redshift-export-worker: no request {request_id:?}");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("redshift-export-worker: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let history = if all {
        match svc.state.history(request_id).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("redshift-export-worker: {e}");
                return ExitCode::from(EX_UNAVAILABLE);
            }
        }
    } else {
        Vec::new()
    };
    let link = if url {
        let Some(key) = item.archive_key.clone() else {
            eprintln!(
                "redshift-export-worker: request {request_id} has no archive yet ({})",
                item.status.as_str()
            );
            return ExitCode::from(1);
        };
        let s = &svc.settings;
        let filename = format!("{request_id}.zip");
        let expiry = Duration::from_secs(s.presign.expiry_secs);
        match presign::presign(
            &svc.clients.s3,
            &svc.clients.sdk,
            &s.archive.bucket,
            &key,
            &filename,
            expiry,
        )
        .await
        {
            Ok(link) => Some(link),
            Err(e) => {
                eprintln!("redshift-export-worker: {e}");
                return ExitCode::from(EX_UNAVAILABLE);
            }
        }
    } else {
        None
    };
    if as_json {
        let mut out = json!({ "state": item });
        if all {
            out["history"] = json!(history);
        }
        if let Some(link) = &link {
            out["url"] = json!(link.url);
            out["url_expires_at"] = json!(crate::state::timestamp(link.expires_at));
        }
        println!("{out:#}");
    } else {
        print_state(&item, &svc.settings.archive.bucket);
        if all {
            println!("history:");
            for e in &history {
                let from = if e.from.is_empty() { "-" } else { &e.from };
                println!(
                    "  {}  {from:>9} → {:<9}  {}  {}",
                    e.at, e.to, e.worker, e.detail
                );
            }
        }
        if let Some(link) = &link {
            println!(
                "link ({}):\n{}",
                crate::state::timestamp(link.expires_at),
                link.url
            );
        }
    }
    ExitCode::SUCCESS
}

async fn check(settings: Settings) -> ExitCode {
    let svc = match Services::new(settings).await {
        Ok(svc) => svc,
        Err(e) => {
            println!("FAIL  configuration: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let probes = crate::check::run(&svc).await;
    for p in &probes {
        match &p.result {
            Ok(detail) => println!("ok    {}: {detail}", p.name),
            Err(problem) => println!("FAIL  {}: {problem}", p.name),
        }
    }
    let failed = probes.iter().filter(|p| p.result.is_err()).count();
    if failed == 0 {
        println!("all {} checks passed", probes.len());
        ExitCode::SUCCESS
    } else {
        println!("{failed} of {} checks failed", probes.len());
        ExitCode::from(EX_UNAVAILABLE)
    }
}

async fn cancel(settings: Settings, request_id: &str) -> ExitCode {
    let svc = match Services::new(settings).await {
        Ok(svc) => svc,
        Err(e) => {
            eprintln!("redshift-export-worker: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    match svc.state.request_cancel(request_id).await {
        Ok(None) => {
            eprintln!("redshift-export-worker: no request {request_id:?}");
            ExitCode::from(1)
        }
        Ok(Some(item)) if item.status.is_terminal() => {
            eprintln!(
                "redshift-export-worker: request {request_id} is already {}",
                item.status.as_str()
            );
            ExitCode::from(1)
        }
        Ok(Some(item)) => {
            println!(
                "cancellation requested for {request_id} ({}); it ends CANCELLED",
                item.status.as_str()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("redshift-export-worker: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        }
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
