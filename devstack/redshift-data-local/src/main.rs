//! The `redshift-data-local` binary: parse options, start logging, serve.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let opts = redshift_data_local::config::Options::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RDL_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    match redshift_data_local::serve(opts).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("redshift-data-local: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
