//! The command line: `run`, `submit`, `status`, `cancel`, `check`, `dlq`, one file each.
//! Exit codes: 0 success, 1 the thing asked about is not there or not done, 64 bad usage or
//! configuration (EX_USAGE), 69 a dependency could not be reached (EX_UNAVAILABLE).

mod cancel;
mod check;
mod dlq;
mod run;
mod status;
mod submit;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::services::Services;
use crate::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "redshift-export-worker",
    version,
    about = "Exports Amazon Redshift query results as zip files, on request from SQS"
)]
pub struct Cli {
    /// The configuration file (TOML); EXPORT_WORKER__SECTION__KEY variables override it.
    #[arg(long, short, global = true, env = "EXPORT_WORKER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: process export requests from the queue until SIGTERM or SIGINT.
    Run,
    /// Enqueue a valid export request and print its id.
    Submit(submit::Args),
    /// Validate the configuration and probe every dependency; non-zero exit on any problem.
    Check(check::Args),
    /// Ask for a request to be cancelled: its statement is cancelled and it ends CANCELLED.
    Cancel(cancel::Args),
    /// Show a request's state (and with --all its history).
    Status(status::Args),
    /// Inspect and settle the dead-letter queue.
    Dlq {
        #[command(subcommand)]
        action: dlq::Action,
    },
}

const EX_USAGE: u8 = 64;
const EX_UNAVAILABLE: u8 = 69;

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // One thread for the async side: it only waits on the network and moves buffers, while
    // decoding runs on the blocking pool (`archive.decode_threads`) and gets every core.
    // Against the multi-threaded scheduler this saves the wake-ups between its threads —
    // about a tenth of a small export's CPU (docs/ARCHITECTURE.md, "Threads").
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("redshift-export-worker: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> ExitCode {
    let Some(path) = cli.config else {
        return usage("--config (or EXPORT_WORKER_CONFIG) names no configuration file");
    };
    let settings = match Settings::load(&path) {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    if let Command::Run = cli.command {
        telemetry::init(&settings.logging);
    } else {
        telemetry::init_cli();
    }
    match cli.command {
        Command::Run => run::run(settings).await,
        Command::Submit(args) => submit::run(settings, args).await,
        Command::Check(args) => check::run(settings, args).await,
        Command::Cancel(args) => cancel::run(settings, args).await,
        Command::Status(args) => status::run(settings, args).await,
        Command::Dlq { action } => dlq::run(settings, action).await,
    }
}

/// Reports bad usage or configuration: exit 64.
fn usage(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("redshift-export-worker: {e}");
    ExitCode::from(EX_USAGE)
}

/// Reports a dependency that did not answer: exit 69.
fn unavailable(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("redshift-export-worker: {e}");
    ExitCode::from(EX_UNAVAILABLE)
}

/// Reports that the thing asked about is not there or not done: exit 1.
fn not_there(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("redshift-export-worker: {e}");
    ExitCode::from(1)
}

/// The services a command needs, or exit 64 when the configuration cannot build them.
async fn services(settings: Settings) -> Result<Arc<Services>, ExitCode> {
    Services::new(settings).await.map_err(usage)
}
