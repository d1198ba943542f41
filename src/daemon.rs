//! The daemon's wiring, in one place: build the services, refuse to start when the queue's
//! redrive would end requests before the worker can, start the admin listener, the queue
//! probe, the sweeper and the systemd watchdog under the [`Shutdown`] tree, install the
//! signal handlers, and run the receive loop until it has drained.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Settings;
use crate::health::Health;
use crate::services::Services;
use crate::shutdown::Shutdown;
use crate::{admin, check, sweeper, systemd, worker};

/// How often the queue is probed for `/readyz`.
const QUEUE_PROBE_INTERVAL: Duration = Duration::from_secs(15);

/// Why the daemon did not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CannotStart(String);

/// Runs the daemon until SIGTERM or SIGINT and the drain after it.
pub async fn run(settings: Settings) -> Result<(), CannotStart> {
    let svc = Services::new(settings).await.map_err(CannotStart)?;
    attempts_fit_the_queue(&svc).await?;
    let shutdown = Shutdown::new();
    if let Some(listen) = svc.settings.admin.address() {
        admin::serve(
            listen,
            svc.metrics.clone(),
            svc.health.clone(),
            shutdown.clone(),
        )
        .await
        .map_err(|e| CannotStart(format!("cannot start the admin listener on {listen}: {e}")))?;
    }
    shutdown.spawn_until_stopped(probe_queue(
        svc.clients.sqs.clone(),
        svc.settings.queue.url.clone(),
        svc.health.clone(),
    ));
    if svc.settings.sweeper.enabled {
        shutdown.spawn(sweeper::run(svc.clone(), shutdown.clone()));
    }
    systemd::notify("READY=1\nSTATUS=receiving export requests");
    if let Some(interval) = systemd::watchdog_interval() {
        shutdown.spawn(watchdog(interval, shutdown.clone()));
    }
    tokio::spawn(on_signals(shutdown.clone()));
    worker::run(svc, shutdown.clone()).await;
    shutdown.finish().await;
    Ok(())
}

/// The worker must be the one to end a request after its last attempt (see `check`). A
/// queue that cannot be read now is reported by `/readyz`, not a reason to stay down.
async fn attempts_fit_the_queue(svc: &Services) -> Result<(), CannotStart> {
    match check::max_receive_count(&svc.clients.sqs, &svc.settings.queue.url).await {
        Ok(limit) => check::attempts_fit(svc.settings.worker.max_attempts, limit)
            .map(|_| ())
            .map_err(CannotStart),
        Err(e) => {
            tracing::warn!(error = %e, "the queue's redrive policy could not be read; /readyz reports the queue");
            Ok(())
        }
    }
}

/// Probes the queue (GetQueueAttributes) and records whether it answered, for `/readyz`.
async fn probe_queue(sqs: aws_sdk_sqs::Client, url: String, health: Arc<Health>) {
    loop {
        let ok = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await;
        if let Err(e) = &ok {
            tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "the queue did not answer the readiness probe");
        }
        health.set_queue_reachable(ok.is_ok());
        tokio::time::sleep(QUEUE_PROBE_INTERVAL).await;
    }
}

/// Pings systemd's watchdog until the daemon exits (it keeps pinging through the drain,
/// which can be longer than the watchdog's timeout).
async fn watchdog(interval: Duration, shutdown: Shutdown) {
    let exit = shutdown.exit_token();
    loop {
        systemd::notify("WATCHDOG=1");
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = exit.cancelled() => return,
        }
    }
}

/// The first SIGTERM or SIGINT starts the shutdown; a second one exits at once.
async fn on_signals(shutdown: Shutdown) {
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
    systemd::notify("STOPPING=1\nSTATUS=finishing the jobs in hand");
    shutdown.stop();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal; exiting now");
    std::process::exit(1);
}
