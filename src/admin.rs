//! The HTTP admin listener: `/metrics` (Prometheus text format), `/healthz` (the process is
//! alive), `/readyz` (configuration loaded, the queue reachable, not shutting down) and
//! `/jobs` (the jobs in flight, for operators).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::sync::watch;

use crate::metrics::{self, Metrics};

/// One job in flight.
#[derive(Debug, Clone)]
struct JobView {
    stage: &'static str,
    started: Instant,
    stage_started: Instant,
}

/// What the worker shares with the admin listener.
#[derive(Default)]
pub struct Health {
    /// Set while the last queue probe succeeded.
    queue_reachable: AtomicBool,
    jobs: Mutex<BTreeMap<String, JobView>>,
}

impl Health {
    pub fn set_queue_reachable(&self, ok: bool) {
        self.queue_reachable.store(ok, Ordering::Relaxed);
    }

    /// Records that `request_id` entered `stage`.
    pub fn job_stage(&self, request_id: &str, stage: &'static str) {
        let now = Instant::now();
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.entry(request_id.to_string())
            .and_modify(|j| {
                j.stage = stage;
                j.stage_started = now;
            })
            .or_insert(JobView {
                stage,
                started: now,
                stage_started: now,
            });
    }

    pub fn job_done(&self, request_id: &str) {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(request_id);
    }
}

struct AdminState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutting_down: watch::Receiver<bool>,
}

/// Serves until `shutting_down` is true and then until the process exits; returns the bound
/// address once listening.
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutting_down: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(AdminState {
        metrics,
        health,
        shutting_down,
    });
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/jobs", get(jobs))
        .with_state(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    tracing::info!(%addr, "admin listener started");
    Ok(addr)
}

async fn metrics_handler(State(s): State<Arc<AdminState>>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        s.metrics.render(),
    )
        .into_response()
}

async fn ready(State(s): State<Arc<AdminState>>) -> (StatusCode, &'static str) {
    if *s.shutting_down.borrow() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if !s.health.queue_reachable.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the queue is not reachable\n",
        )
    } else {
        (StatusCode::OK, "ready\n")
    }
}

async fn jobs(State(s): State<Arc<AdminState>>) -> Response {
    let jobs = s
        .health
        .jobs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let list: Vec<_> = jobs
        .iter()
        .map(|(id, j)| {
            json!({
                "request_id": id,
                "stage": j.stage,
                "elapsed_secs": j.started.elapsed().as_secs_f64(),
                "stage_elapsed_secs": j.stage_started.elapsed().as_secs_f64(),
            })
        })
        .collect();
    axum::Json(json!({ "jobs": list })).into_response()
}

/// Probes the queue (GetQueueAttributes) every `every` and records whether it answered.
pub async fn probe_queue(
    sqs: aws_sdk_sqs::Client,
    url: String,
    health: Arc<Health>,
    every: Duration,
) {
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
        tokio::time::sleep(every).await;
    }
}
