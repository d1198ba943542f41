//! `redshift-data-local`: an Amazon Redshift Data API emulator over PostgreSQL.
//!
//! Unmodified AWS SDKs talk to it (awsJson1_1, `X-Amz-Target: RedshiftData.<Operation>`).
//! Statements run asynchronously on PostgreSQL, configured to read string literals the way
//! Redshift does; `UNLOAD` writes Redshift-shaped output to S3. Tests drive faults and read
//! the log of executed SQL through admin endpoints under `/__admin/`.
//!
//! Layout:
//! - [`config`]: command-line options.
//! - [`api`]: HTTP routing, the five Data API operations and the admin endpoints.
//! - [`state`]: statements, ClientToken idempotency, the SQL log, faults, statistics.
//! - [`runner`]: one statement's life on its own PostgreSQL connection.
//! - [`sqltext`]: the Redshift-compatible lexer (placeholders, literals, outer LIMIT).
//! - [`unload`]: UNLOAD parsing, row encoding, S3 output and manifests.
//! - [`error`], [`model`]: the wire shapes.

pub mod api;
pub mod config;
pub mod error;
pub mod model;
pub mod runner;
pub mod sqltext;
pub mod state;
pub mod unload;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use config::Options;
use state::{Faults, Registry};
use unload::UnloadSettings;

/// Builds everything and serves until SIGINT or SIGTERM.
pub async fn serve(opts: Options) -> anyhow::Result<()> {
    let faults: Faults = match &opts.faults {
        Some(text) => serde_json::from_str(text).context("--faults is not valid fault JSON")?,
        None => Faults::default(),
    };
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let mut s3 = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true);
    if let Some(endpoint) = &opts.s3_endpoint {
        s3 = s3.endpoint_url(endpoint);
    }
    let ctx = runner::RunContext {
        registry: Arc::new(Registry::new(faults)),
        pg_conn: opts.pg.clone(),
        s3: aws_sdk_s3::Client::from_conf(s3.build()),
        unload: UnloadSettings {
            slices: usize::from(opts.slices),
            part_size: usize::from(opts.part_size_mib) * 1024 * 1024,
            zero_row_manifest: opts.zero_row_manifest,
        },
        step_delay: Duration::from_millis(opts.step_delay_ms),
    };
    let app = Arc::new(api::App {
        ctx: Arc::new(ctx),
        page_rows: opts.page_rows,
    });

    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    // Scripts and tests read this line to learn the port.
    println!("redshift-data-local listening on http://{addr}");
    tracing::info!(%addr, slices = opts.slices, "redshift-data-local started");
    axum::serve(listener, api::router(app))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("redshift-data-local stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
