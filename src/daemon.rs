//! The daemon's wiring, in one place: build the services, refuse to start when the queue's
//! redrive would end requests before the worker can, start the admin listener, the queue
//! probe, the sweeper and the systemd watchdog under the [`Shutdown`] tree, install the
//! signal handlers, and run the receive loop until it has drained.

use std::sync::Arc;
use std::time::Duration;

use crate::aws::AwsResultExt;
use crate::config::Settings;
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
    shutdown.spawn_until_stopped(probe_queues(svc.clone()));
    if svc.settings.sweeper.enabled {
        shutdown.spawn(sweeper::run(svc.clone(), shutdown.clone()));
    }
    systemd::notify("READY=1\nSTATUS=receiving export requests");
    if let Some(interval) = systemd::watchdog_interval() {
        shutdown.spawn(watchdog(interval, svc.clone(), shutdown.clone()));
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

/// Probes both queues (GetQueueAttributes) and records whether the request queue answered,
/// for `/readyz`, and how many messages each holds, for the metrics: queue depth and a
/// dead-letter queue that is not empty are seen without a CloudWatch exporter.
async fn probe_queues(svc: Arc<Services>) {
    let q = &svc.settings.queue;
    let mut queues = vec![("requests", q.url.clone())];
    if let Some(dlq) = &q.dead_letter_url {
        queues.push(("dead_letter", dlq.clone()));
    }
    loop {
        for (name, url) in &queues {
            let ok = probe_queue(&svc, name, url).await;
            if *name == "requests" {
                svc.health.set_queue_reachable(ok);
            }
            svc.metrics
                .queue_up
                .with_label_values(&[name])
                .set(i64::from(ok));
        }
        tokio::time::sleep(QUEUE_PROBE_INTERVAL).await;
    }
}

/// One queue's message counts; false when it did not answer.
async fn probe_queue(svc: &Services, name: &str, url: &str) -> bool {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = svc
        .clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(A::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .aws("sqs", "GetQueueAttributes");
    let attributes = match out {
        Ok(out) => out.attributes.unwrap_or_default(),
        Err(e) => {
            tracing::warn!(queue = name, error = %e, "the queue did not answer its probe");
            return false;
        }
    };
    for (state, attribute) in [
        ("visible", A::ApproximateNumberOfMessages),
        ("in_flight", A::ApproximateNumberOfMessagesNotVisible),
        ("delayed", A::ApproximateNumberOfMessagesDelayed),
    ] {
        let count = attributes
            .get(&attribute)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0);
        svc.metrics
            .queue_messages
            .with_label_values(&[name, state])
            .set(count);
    }
    true
}

/// Pings systemd's watchdog while the receive loop makes progress (a loop stuck for longer
/// than [`worker::stall_limit`] gets no ping, and systemd restarts the service), and through
/// the drain until the daemon exits.
async fn watchdog(interval: Duration, svc: Arc<Services>, shutdown: Shutdown) {
    let exit = shutdown.exit_token();
    let limit = worker::stall_limit(svc.settings.queue.wait_secs);
    loop {
        let idle = svc.health.loop_idle();
        if idle < limit || shutdown.is_stopping() {
            systemd::notify("WATCHDOG=1");
        } else {
            tracing::error!(
                idle_secs = idle.as_secs(),
                limit_secs = limit.as_secs(),
                "the receive loop has made no progress; not pinging the watchdog"
            );
        }
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
