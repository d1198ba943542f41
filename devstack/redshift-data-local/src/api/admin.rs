//! The emulator's own endpoints under `/__admin/`: the log of executed SQL, fault injection,
//! releasing held statements, statistics.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::App;
use crate::state::Faults;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/__admin/health", get(|| async { "ok" }))
        .route("/__admin/sql-log", get(sql_log))
        .route("/__admin/faults", get(get_faults).put(put_faults))
        .route("/__admin/release", post(release))
        .route("/__admin/stats", get(stats))
        .route("/__admin/stats/reset", post(reset_stats))
}

#[derive(Deserialize)]
struct LogQuery {
    statement_id: Option<String>,
}

async fn sql_log(State(app): State<Arc<App>>, Query(q): Query<LogQuery>) -> Json<Value> {
    Json(json!({ "entries": app.ctx.registry.sql_log(q.statement_id.as_deref()) }))
}

async fn get_faults(State(app): State<Arc<App>>) -> Json<Faults> {
    Json(app.ctx.registry.faults())
}

async fn put_faults(State(app): State<Arc<App>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(faults) => {
            tracing::info!(?faults, "fault injection changed");
            app.ctx.registry.set_faults(faults.clone());
            Json(faults).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("invalid faults: {e}\n")).into_response(),
    }
}

async fn release(State(app): State<Arc<App>>) -> StatusCode {
    app.ctx.registry.release_held();
    StatusCode::NO_CONTENT
}

async fn stats(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!(app.ctx.registry.stats()))
}

async fn reset_stats(State(app): State<Arc<App>>) -> StatusCode {
    app.ctx.registry.reset_stats();
    StatusCode::NO_CONTENT
}
