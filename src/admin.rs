//! The HTTP admin listener: `/metrics` (Prometheus text format), `/healthz` (the process is
//! alive), `/readyz` (configuration loaded, the queue reachable, not shutting down) and
//! `/jobs` (the jobs in flight, for operators).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::health::Health;
use crate::metrics::{self, Metrics};
use crate::shutdown::Shutdown;

struct AdminState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: Shutdown,
}

/// Serves through the drain (`/readyz` answers 503 once shutdown began) until the daemon
/// exits; returns the bound address once listening, which is also logged (`listen` may ask
/// for port 0).
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: Shutdown,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let exit = shutdown.exit_token();
    let tasks = shutdown.clone();
    let state = Arc::new(AdminState {
        metrics,
        health,
        shutdown,
    });
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/jobs", get(jobs))
        .with_state(state);
    tasks.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { exit.cancelled().await })
            .await;
        if let Err(e) = served {
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
    if s.shutdown.is_stopping() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if !s.health.queue_reachable() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the queue is not reachable\n",
        )
    } else {
        (StatusCode::OK, "ready\n")
    }
}

async fn jobs(State(s): State<Arc<AdminState>>) -> Response {
    axum::Json(json!({ "jobs": s.health.jobs() })).into_response()
}
