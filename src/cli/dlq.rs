//! `dlq`: list the dead-letter queue, and redrive, fail or delete its messages.

use std::process::ExitCode;

use super::{services, unavailable};
use crate::config::Settings;
use crate::dlq::{self, Entry};

#[derive(Debug, clap::Subcommand)]
pub(super) enum Action {
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
    Redrive(Pick),
    /// Record the requests the messages name FAILED (dead_lettered) and remove the messages.
    Fail(Pick),
    /// Remove messages.
    Delete(Pick),
}

#[derive(Debug, clap::Args)]
pub(super) struct Pick {
    /// SQS message ids, as `dlq list` shows them.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    message_ids: Vec<String>,
    /// Every message in the dead-letter queue.
    #[arg(long)]
    all: bool,
}

pub(super) async fn run(settings: Settings, action: Action) -> ExitCode {
    let svc = match services(settings).await {
        Ok(svc) => svc,
        Err(code) => return code,
    };
    let (action, pick) = match action {
        Action::List { json, max } => {
            return match dlq::list(&svc, max).await {
                Ok(entries) => {
                    print_entries(&entries, json);
                    ExitCode::SUCCESS
                }
                Err(e) => unavailable(e),
            };
        }
        Action::Redrive(p) => (dlq::Action::Redrive, p),
        Action::Fail(p) => (dlq::Action::Fail, p),
        Action::Delete(p) => (dlq::Action::Delete, p),
    };
    let done = match dlq::act(&svc, action, &pick.message_ids).await {
        Ok(done) => done,
        Err(e) => return unavailable(e),
    };
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

fn print_entries(entries: &[Entry], json: bool) {
    for e in entries {
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
}
