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

/// Outcomes counted by `jobs_total`. `panicked` is a job that panicked: a defect, recorded
/// and released like a transient failure.
pub const JOB_OUTCOMES: &[&str] = &[
    "completed",
    "failed",
    "cancelled",
    "retried",
    "yielded",
    "duplicate",
    "panicked",
    "deferred",
];

/// The codes a message is dead-lettered with: what the parser says of a message without a
/// usable request id, a request id that names another request, and a state item this version
/// cannot read. Initialised at zero so a rate sees the first.
pub const DEAD_LETTER_CODES: &[&str] = &[
    "message_too_large",
    "invalid_encoding",
    "invalid_json",
    "invalid_message",
    "invalid_request_id",
    "request_id_conflict",
    "unreadable_state",
];

/// The queues the probe reads: the request queue and the dead-letter queue.
pub const QUEUES: &[&str] = &["requests", "dead_letter"];
/// Message states of `queue_messages`, as SQS counts them.
pub const QUEUE_STATES: &[&str] = &["visible", "in_flight", "delayed"];

/// Stages timed by `stage_duration_seconds`.
pub const STAGES: &[&str] = &["queue_wait", "query", "archive", "notify", "end_to_end"];

pub struct Metrics {
    registry: Registry,
    /// Messages taken from the queue.
    pub messages_received: IntCounter,
    /// Messages moved to the dead-letter queue, by error code.
    pub messages_dead_lettered: IntCounterVec,
    /// Deliveries handled, by outcome ([`JOB_OUTCOMES`]) and
    /// error code ("" when there is none).
    pub jobs: IntCounterVec,
    /// Requests recorded FAILED, all error codes together: starts at zero, so `increase()`
    /// sees the first failure (`jobs_total` has them by code, each series from its first use).
    pub failures: IntCounter,
    /// Jobs being worked on now.
    pub jobs_in_flight: IntGauge,
    /// Job slots (`worker.max_concurrent_jobs`).
    pub job_slots: IntGauge,
    /// Messages in the request and dead-letter queues, by queue and state (visible, in_flight,
    /// delayed), as the last probe read them.
    pub queue_messages: IntGaugeVec,
    /// 1 when the queue answered the last probe, by queue.
    pub queue_up: IntGaugeVec,
    /// How long the open request that has not moved for longest has not moved, as the last
    /// sweep saw it (0 when none is open).
    pub open_request_idle_seconds: IntGauge,
    /// Seconds spent per stage.
    pub stage_duration: HistogramVec,
    /// Data rows in completed archives.
    pub rows_exported: IntCounter,
    /// Bytes of completed archives.
    pub archive_bytes: IntCounter,
    /// Parts copied into archives after being decoded, by where the copy read them from
    /// (`archive::REREAD_FROM`): `s3` means the upload bucket was read twice for the part.
    pub archive_part_rereads: IntCounterVec,
    /// Visibility extensions of in-flight messages, by outcome (ok, error).
    pub visibility_extensions: IntCounterVec,
    /// Retries of transient failures inside a stage, by stage operation.
    pub retries: IntCounterVec,
    /// AWS API attempts (SDK retries included), by service, operation and outcome (ok,
    /// denied, client_error, server_error, no_response).
    pub aws_requests: IntCounterVec,
    /// AWS calls refused for want of permission, all services together (from zero, so an
    /// alert sees the first; `aws_requests_total{outcome="denied"}` says which).
    pub aws_denied: IntCounter,
    /// Requests the sweeper found idle with no job holding them, by action (redriven,
    /// orphaned, told: an ended request's owed events delivered) — each one was a request
    /// whose message had gone.
    pub sweeper_actions: IntCounterVec,
    /// Sweeps, by outcome (ok, error).
    pub sweeps: IntCounterVec,
    /// Jobs waiting now for a fleet-wide Redshift statement slot.
    pub statement_slot_waiting: IntGauge,
    /// Waits for a statement slot begun (each job counts once per wait).
    pub statement_slot_waits: IntCounter,
    /// Deliveries put back on the queue because their requester had as many requests in
    /// flight as `worker.max_in_flight_per_requester` allows.
    pub requester_deferrals: IntCounter,
    /// Completion event deliveries, by destination (configured names) and outcome (sent,
    /// retried, undelivered).
    pub events: IntCounterVec,
    /// Events given up as undelivered, all destinations together (from zero, for the alert).
    pub events_undelivered: IntCounter,
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

/// Seconds bounds of `stage_duration_seconds`: from a fast DynamoDB write to exports of many
/// hours, about three buckets per factor of ten. Buckets above an hour let an alert on "over an
/// hour" fire: `histogram_quantile` never reports more than the highest finite bound.
const STAGE_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
    7200.0, 14400.0, 43200.0,
];

/// Creates metrics with the common prefix and registers them.
struct Registrar<'r>(&'r Registry);

impl Registrar<'_> {
    #[expect(
        clippy::expect_used,
        reason = "names, help texts and labels are constants of this file, valid and unique; the unit test builds them all"
    )]
    fn register<C: prometheus::core::Collector + Clone + 'static>(
        &self,
        made: prometheus::Result<C>,
    ) -> C {
        let collector = made.expect("a valid metric");
        self.0
            .register(Box::new(collector.clone()))
            .expect("a metric registered once");
        collector
    }

    fn name(name: &str) -> String {
        format!("redshift_export_{name}")
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(Self::name(name), help))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(
            Opts::new(Self::name(name), help),
            labels,
        ))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(Self::name(name), help))
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(Self::name(name), help), labels))
    }

    fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[&str],
    ) -> HistogramVec {
        self.register(HistogramVec::new(
            HistogramOpts::new(Self::name(name), help).buckets(buckets.to_vec()),
            labels,
        ))
    }
}

impl Metrics {
    /// Registers every metric. Long only because it is a list: one registration per field,
    /// in the order of the struct.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = Registrar(&registry);
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, …
        #[expect(clippy::expect_used, reason = "registered once, on a new registry")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process metrics registered once");
        let metrics = Metrics {
            messages_received: r.counter(
                "messages_received_total",
                "Messages received from the request queue.",
            ),
            messages_dead_lettered: r.counter_vec(
                "messages_dead_lettered_total",
                "Messages without a usable request id moved to the dead-letter queue, by error code.",
                &["error_code"],
            ),
            jobs: r.counter_vec(
                "jobs_total",
                "Deliveries handled, by outcome and error code (empty when there is none).",
                &["outcome", "error_code"],
            ),
            failures: r.counter(
                "failures_total",
                "Requests recorded FAILED, all error codes together.",
            ),
            jobs_in_flight: r.gauge("jobs_in_flight", "Jobs being worked on now."),
            job_slots: r.gauge("job_slots", "Jobs this process runs at once at most."),
            queue_messages: r.gauge_vec(
                "queue_messages",
                "Messages in the request and dead-letter queues, by queue and state.",
                &["queue", "state"],
            ),
            queue_up: r.gauge_vec(
                "queue_up",
                "1 when the queue answered the last probe.",
                &["queue"],
            ),
            open_request_idle_seconds: r.gauge(
                "open_request_idle_seconds",
                "Seconds the longest-idle open request has not moved, at the last sweep.",
            ),
            stage_duration: r.histogram_vec(
                "stage_duration_seconds",
                "Time spent per stage of an export.",
                STAGE_BUCKETS,
                &["stage"],
            ),
            rows_exported: r.counter("rows_exported_total", "Data rows in completed archives."),
            archive_bytes: r.counter("archive_bytes_total", "Bytes of completed archives."),
            archive_part_rereads: r.counter_vec(
                "archive_part_rereads_total",
                "Parts copied into archives after being decoded, by where the copy read them \
                 from: memory (small part), spill (local disk) or s3 (the upload bucket again).",
                &["from"],
            ),
            visibility_extensions: r.counter_vec(
                "visibility_extensions_total",
                "Visibility extensions of in-flight messages, by outcome.",
                &["outcome"],
            ),
            retries: r.counter_vec(
                "retries_total",
                "Retries of transient failures inside a stage, by operation.",
                &["operation"],
            ),
            aws_requests: r.counter_vec(
                "aws_requests_total",
                "AWS API attempts, SDK retries included, by service, operation and outcome.",
                &["service", "operation", "outcome"],
            ),
            aws_denied: r.counter(
                "aws_denied_total",
                "AWS calls refused for want of permission (AccessDenied).",
            ),
            sweeper_actions: r.counter_vec(
                "sweeper_actions_total",
                "Open requests found idle and unleased by the sweeper, by action taken.",
                &["action"],
            ),
            sweeps: r.counter_vec(
                "sweeps_total",
                "Sweeps for idle open requests, by outcome.",
                &["outcome"],
            ),
            statement_slot_waiting: r.gauge(
                "statement_slot_waiting",
                "Jobs waiting now for a fleet-wide Redshift statement slot.",
            ),
            statement_slot_waits: r.counter(
                "statement_slot_waits_total",
                "Waits for a fleet-wide Redshift statement slot begun.",
            ),
            requester_deferrals: r.counter(
                "requester_deferrals_total",
                "Deliveries put back on the queue because their requester was at its in-flight limit.",
            ),
            events: r.counter_vec(
                "events_total",
                "Completion event deliveries, by destination and outcome.",
                &["destination", "outcome"],
            ),
            events_undelivered: r.counter(
                "events_undelivered_total",
                "Completion events given up as undelivered, all destinations together.",
            ),
            runtime_tasks: r.gauge(
                "runtime_alive_tasks",
                "Tasks alive in the async runtime when metrics were read.",
            ),
            build_info: r.gauge_vec(
                "build_info",
                "Build information; always 1.",
                &["version", "revision"],
            ),
            registry,
        };
        metrics.initialise();
        metrics
    }

    /// Known series start at zero, so rates exist before the first event.
    fn initialise(&self) {
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("BUILD_REVISION")])
            .set(1);
        for step in crate::retry::step::ALL {
            let _ = self.retries.with_label_values(&[step]);
        }
        for code in DEAD_LETTER_CODES {
            let _ = self.messages_dead_lettered.with_label_values(&[code]);
        }
        for queue in QUEUES {
            let _ = self.queue_up.with_label_values(&[queue]);
            for state in QUEUE_STATES {
                let _ = self.queue_messages.with_label_values(&[queue, state]);
            }
        }
        for stage in STAGES {
            let _ = self.stage_duration.with_label_values(&[*stage]);
        }
        for outcome in JOB_OUTCOMES {
            let _ = self.jobs.with_label_values(&[outcome, ""]);
        }
        for outcome in ["ok", "error"] {
            let _ = self.visibility_extensions.with_label_values(&[outcome]);
            let _ = self.sweeps.with_label_values(&[outcome]);
        }
        for action in ["redriven", "orphaned", "told"] {
            let _ = self.sweeper_actions.with_label_values(&[action]);
        }
        for from in crate::archive::REREAD_FROM {
            let _ = self.archive_part_rereads.with_label_values(&[from]);
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
            "redshift_export_build_info{revision=",
        ] {
            assert!(text.contains(family), "{family} missing from\n{text}");
        }
    }
}
