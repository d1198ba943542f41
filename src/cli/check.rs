//! `check`: the configuration is valid and every dependency answers, one line per probe.

use std::process::ExitCode;

use super::{EX_UNAVAILABLE, EX_USAGE};
use crate::aws::Clients;
use crate::config::Settings;
use crate::metrics::Metrics;

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Validate the configuration and its template files only, without touching AWS (for CI
    /// pipelines and image builds).
    #[arg(long)]
    offline: bool,
}

pub(super) async fn run(settings: Settings, args: Args) -> ExitCode {
    let probes = if args.offline {
        vec![crate::check::configuration(&settings)]
    } else {
        let clients = Clients::new(&settings, &Metrics::new()).await;
        crate::check::run(&settings, &clients).await
    };
    for p in &probes {
        match &p.result {
            Ok(detail) => println!("ok    {}: {detail}", p.name),
            Err(problem) => println!("FAIL  {}: {problem}", p.name),
        }
    }
    let failed: Vec<&str> = probes
        .iter()
        .filter(|p| p.result.is_err())
        .map(|p| p.name.as_str())
        .collect();
    if failed.is_empty() {
        println!("all {} checks passed", probes.len());
        return ExitCode::SUCCESS;
    }
    println!("{} of {} checks failed", failed.len(), probes.len());
    if failed.contains(&crate::check::CONFIGURATION) {
        ExitCode::from(EX_USAGE)
    } else {
        ExitCode::from(EX_UNAVAILABLE)
    }
}
