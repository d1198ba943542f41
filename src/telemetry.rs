//! Logging: human-readable on a terminal, JSON lines otherwise (or as configured). Jobs log
//! inside a span carrying `request_id` and, once known, `statement_id`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingSettings};

/// Logging for the daemon, to stderr.
pub fn init(settings: &LoggingSettings) {
    let filter = EnvFilter::try_from_env("EXPORT_WORKER_LOG")
        .unwrap_or_else(|_| EnvFilter::new(&settings.filter));
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}

/// Quiet logging for the short-lived commands: warnings and errors only.
pub fn init_cli() {
    let filter =
        EnvFilter::try_from_env("EXPORT_WORKER_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
