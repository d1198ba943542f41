//! `run`: the daemon (its wiring is [`crate::daemon`]).

use std::process::ExitCode;

use super::EX_USAGE;
use crate::config::Settings;

pub(super) async fn run(settings: Settings) -> ExitCode {
    match crate::daemon::run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            ExitCode::from(EX_USAGE)
        }
    }
}
