//! Every metric, defined in one place, on a registry that is passed down (never a global).
//!
//! Naming follows Prometheus' rules (checked by `promtool check metrics` in the tests): one
//! `redshift_export_` prefix, base units in the name (`_seconds`, `_bytes`), counters ending in
//! `_total`, and labels with bounded values only — stage and outcome names, the fixed set of
//! error codes — never a request id, key or address.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The text exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Stages timed by `stage_duration_seconds`.
pub const STAGES: &[&str] = &["queue_wait", "query", "archive", "notify", "end_to_end"];

pub struct Metrics {
    registry: Registry,
    /// Messages taken from the queue.
    pub messages_received: IntCounter,
    /// Messages moved to the dead-letter queue, by error code.
    pub messages_dead_lettered: IntCounterVec,
    /// Deliveries handled, by outcome (completed, failed, cancelled, retried, yielded) and
    /// error code ("" when there is none).
    pub jobs: IntCounterVec,
    /// Jobs being worked on now.
    pub jobs_in_flight: IntGauge,
    /// Seconds spent per stage.
    pub stage_duration: HistogramVec,
    /// Data rows in completed archives.
    pub rows_exported: IntCounter,
    /// Bytes of completed archives.
    pub archive_bytes: IntCounter,
    /// Visibility extensions of in-flight messages, by outcome (ok, error).
    pub visibility_extensions: IntCounterVec,
    /// Retries of transient failures inside a stage, by stage operation.
    pub retries: IntCounterVec,
    /// AWS API attempts (SDK retries included), by service, operation and outcome (ok,
    /// client_error, server_error, no_response).
    pub aws_requests: IntCounterVec,
    /// Open requests found idle with no live lease by the sweeper, by action (redriven,
    /// orphaned) — each one was a request whose message had gone.
    pub sweeper_actions: IntCounterVec,
    /// Sweeps, by outcome (ok, error).
    pub sweeps: IntCounterVec,
    /// Tasks alive in the async runtime, set when /metrics is read: flat under steady load
    /// (the soak test watches it), growing when something leaks tasks.
    pub runtime_tasks: IntGauge,
    /// 1, with the version as a label.
    pub build_info: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(format!("redshift_export_{name}"), help)
                .unwrap_or_else(|e| unreachable!("{e}"));
            registry
                .register(Box::new(c.clone()))
                .unwrap_or_else(|e| unreachable!("{e}"));
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(format!("redshift_export_{name}"), help), labels)
                .unwrap_or_else(|e| unreachable!("{e}"));
            registry
                .register(Box::new(c.clone()))
                .unwrap_or_else(|e| unreachable!("{e}"));
            c
        };
        let messages_received = counter(
            "messages_received_total",
            "Messages received from the request queue.",
        );
        let messages_dead_lettered = counter_vec(
            "messages_dead_lettered_total",
            "Messages without a usable request id moved to the dead-letter queue, by error code.",
            &["error_code"],
        );
        let jobs = counter_vec(
            "jobs_total",
            "Deliveries handled, by outcome and error code (empty when there is none).",
            &["outcome", "error_code"],
        );
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(format!("redshift_export_{name}"), help)
                .unwrap_or_else(|e| unreachable!("{e}"));
            registry
                .register(Box::new(g.clone()))
                .unwrap_or_else(|e| unreachable!("{e}"));
            g
        };
        let jobs_in_flight = gauge("jobs_in_flight", "Jobs being worked on now.");
        let stage_duration = HistogramVec::new(
            HistogramOpts::new(
                "redshift_export_stage_duration_seconds",
                "Time spent per stage of an export.",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
                3600.0,
            ]),
            &["stage"],
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        registry
            .register(Box::new(stage_duration.clone()))
            .unwrap_or_else(|e| unreachable!("{e}"));
        let rows_exported = counter("rows_exported_total", "Data rows in completed archives.");
        let archive_bytes = counter("archive_bytes_total", "Bytes of completed archives.");
        let visibility_extensions = counter_vec(
            "visibility_extensions_total",
            "Visibility extensions of in-flight messages, by outcome.",
            &["outcome"],
        );
        let retries = counter_vec(
            "retries_total",
            "Retries of transient failures inside a stage, by operation.",
            &["operation"],
        );
        let aws_requests = counter_vec(
            "aws_requests_total",
            "AWS API attempts, SDK retries included, by service, operation and outcome.",
            &["service", "operation", "outcome"],
        );
        let sweeper_actions = counter_vec(
            "sweeper_actions_total",
            "Open requests found idle and unleased by the sweeper, by action taken.",
            &["action"],
        );
        let sweeps = counter_vec(
            "sweeps_total",
            "Sweeps for idle open requests, by outcome.",
            &["outcome"],
        );
        let runtime_tasks = gauge(
            "runtime_alive_tasks",
            "Tasks alive in the async runtime when metrics were read.",
        );
        let build_info = IntGaugeVec::new(
            Opts::new("redshift_export_build_info", "Build information; always 1."),
            &["version"],
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        registry
            .register(Box::new(build_info.clone()))
            .unwrap_or_else(|e| unreachable!("{e}"));
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // Known series start at zero, so rates exist before the first event.
        for stage in STAGES {
            let _ = stage_duration.with_label_values(&[*stage]);
        }
        for outcome in ["completed", "failed", "cancelled", "retried", "yielded"] {
            let _ = jobs.with_label_values(&[outcome, ""]);
        }
        for outcome in ["ok", "error"] {
            let _ = visibility_extensions.with_label_values(&[outcome]);
            let _ = sweeps.with_label_values(&[outcome]);
        }
        for action in ["redriven", "orphaned"] {
            let _ = sweeper_actions.with_label_values(&[action]);
        }
        Metrics {
            registry,
            messages_received,
            messages_dead_lettered,
            jobs,
            jobs_in_flight,
            stage_duration,
            rows_exported,
            archive_bytes,
            visibility_extensions,
            retries,
            aws_requests,
            sweeper_actions,
            sweeps,
            runtime_tasks,
            build_info,
        }
    }

    /// Records a stage's duration.
    pub fn observe_stage(&self, stage: &str, seconds: f64) {
        self.stage_duration
            .with_label_values(&[stage])
            .observe(seconds);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.runtime_tasks
                .set(i64::try_from(runtime.metrics().num_alive_tasks()).unwrap_or(i64::MAX));
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_documented_families() {
        let m = Metrics::new();
        m.jobs.with_label_values(&["failed", "query_failed"]).inc();
        m.observe_stage("query", 1.5);
        let text = m.render();
        for family in [
            "redshift_export_messages_received_total",
            "redshift_export_jobs_total{error_code=\"query_failed\",outcome=\"failed\"} 1",
            "redshift_export_jobs_in_flight 0",
            "redshift_export_stage_duration_seconds_bucket{stage=\"query\",le=\"2.5\"} 1",
            "redshift_export_build_info{version=",
        ] {
            assert!(text.contains(family), "{family} missing from\n{text}");
        }
    }
}
