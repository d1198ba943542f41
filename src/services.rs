//! The composition root: every client and component the daemon's jobs talk to, built once at
//! start-up from the settings and shared by the receive loop, the jobs and the sweeper.

use std::sync::Arc;

use crate::archive::Archiver;
use crate::aws::Clients;
use crate::config::Settings;
use crate::events::Publisher;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::notify::Mailer;
use crate::notify::templates::Templates;
use crate::redshift::Redshift;
use crate::retry::RetryPolicy;
use crate::state::StateStore;

/// Everything a job talks to, built once at start-up.
pub struct Services {
    pub settings: Settings,
    pub clients: Clients,
    pub state: StateStore,
    pub redshift: Redshift,
    pub archiver: Archiver,
    pub mailer: Mailer,
    pub templates: Templates,
    /// Completion events to the configured destinations.
    pub publisher: Publisher,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Limits the CPU-bound archive stage independently of the job slots.
    pub archive_slots: tokio::sync::Semaphore,
    /// How every step of a job retries a transient failure.
    pub retry: RetryPolicy,
}

impl Services {
    pub async fn new(settings: Settings) -> Result<Arc<Services>, String> {
        let metrics = Arc::new(Metrics::new());
        let clients = Clients::new(&settings, &metrics).await;
        let worker = if settings.worker.id.is_empty() {
            default_worker_id()
        } else {
            settings.worker.id.clone()
        };
        let state = StateStore::new(
            clients.dynamodb.clone(),
            settings.state.table.clone(),
            settings.state.ttl_days,
            worker,
        );
        let redshift = Redshift::new(clients.redshift.clone(), settings.redshift.clone());
        let archiver = Archiver::new(
            clients.s3.clone(),
            settings.archive.clone(),
            settings.upload.bucket.clone(),
        )
        .with_metrics(&metrics);
        let mailer = Mailer::new(&settings.email, clients.sesv2.clone())?;
        let templates = Templates::load(&settings.email.templates)?;
        let publisher = Publisher::new(&settings.events, &clients, &metrics)?;
        let health = Arc::new(Health::default());
        let archive_slots = tokio::sync::Semaphore::new(settings.worker.max_concurrent_archives);
        let retry = RetryPolicy::stage(&settings);
        Ok(Arc::new(Services {
            settings,
            clients,
            state,
            redshift,
            archiver,
            mailer,
            templates,
            publisher,
            metrics,
            health,
            archive_slots,
            retry,
        }))
    }
}

/// `<host name>:<process id>`: unique among the replicas on one table, and it says where to
/// look. The host name comes from `HOSTNAME` (set by Kubernetes and most shells), else the
/// kernel's, else `/etc/hostname`: a sandbox may hide `/proc/sys` (systemd's `ProcSubset=pid`).
fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!(
        "{}:{}",
        if host.is_empty() { "worker" } else { &host },
        std::process::id()
    )
}
