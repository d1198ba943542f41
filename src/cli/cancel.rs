//! `cancel`: ask for a request to be cancelled.

use std::process::ExitCode;

use super::{not_there, services, unavailable};
use crate::config::Settings;

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    request_id: String,
}

pub(super) async fn run(settings: Settings, args: Args) -> ExitCode {
    let svc = match services(settings).await {
        Ok(svc) => svc,
        Err(code) => return code,
    };
    let request_id = &args.request_id;
    match svc.state.request_cancel(request_id).await {
        Ok(None) => not_there(format!("no request {request_id:?}")),
        Ok(Some(item)) if item.status.is_terminal() => not_there(format!(
            "request {request_id} is already {}",
            item.status.as_str()
        )),
        Ok(Some(item)) => {
            println!(
                "cancellation requested for {request_id} ({}); it ends CANCELLED",
                item.status.as_str()
            );
            ExitCode::SUCCESS
        }
        Err(e) => unavailable(e),
    }
}
