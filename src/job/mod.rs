//! One export through its stages — QUEUED → QUERYING → ARCHIVING → NOTIFYING → COMPLETED —
//! resumable from whatever state DynamoDB recorded: a redelivered message re-attaches to the
//! recorded statement, rebuilds the archive under the same key, and sends the email only if
//! its acceptance was not recorded. A terminal request is acknowledged without any work.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::admin::Health;
use crate::archive::{Archiver, Plan};
use crate::aws::Clients;
use crate::config::Settings;
use crate::error::JobError;
use crate::message::{EmailAddress, ExportRequest, QuerySource};
use crate::metrics::Metrics;
use crate::notify::Mailer;
use crate::notify::templates::{ReadyContext, Templates, human_size};
use crate::redshift::Redshift;
use crate::state::{Changes, LeaseOwner, StateItem, StateStore, Status, timestamp};
use crate::{policy, presign, sqlcheck, unload};

mod failure;

use failure::after_error;
pub use failure::{fail, reject};

/// Everything a job talks to, built once at start-up.
pub struct Services {
    pub settings: Settings,
    pub clients: Clients,
    pub state: StateStore,
    pub redshift: Redshift,
    pub archiver: Archiver,
    pub mailer: Mailer,
    pub templates: Templates,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Limits the CPU-bound archive stage independently of the job slots.
    pub archive_slots: tokio::sync::Semaphore,
}

impl Services {
    pub async fn new(settings: Settings) -> Result<Arc<Services>, String> {
        let metrics = Arc::new(Metrics::new());
        let clients = Clients::new(&settings.aws, settings.queue.wait_secs, &metrics).await;
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
        );
        let mailer = Mailer::new(&settings.email, clients.sesv2.clone())?;
        let templates = Templates::load(&settings.email.templates)?;
        let health = Arc::new(Health::default());
        let archive_slots = tokio::sync::Semaphore::new(settings.worker.max_concurrent_archives);
        Ok(Arc::new(Services {
            settings,
            clients,
            state,
            redshift,
            archiver,
            mailer,
            templates,
            metrics,
            health,
            archive_slots,
        }))
    }
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!(
        "{}:{}",
        if host.is_empty() { "worker" } else { &host },
        std::process::id()
    )
}

/// What to do with the message afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The request became terminal: delete the message.
    Finished(Status),
    /// The request was already terminal (a duplicate delivery): delete the message.
    Acknowledged(Status),
    /// A transient failure: release the message so it comes back after this delay.
    Retry(Duration),
    /// Another worker owns the request: leave the message alone.
    Yield,
    /// The message must not be processed (e.g. its request id names another request): move
    /// it to the dead-letter queue with this code and reason, and touch no request.
    DeadLetter { code: &'static str, reason: String },
}

/// A request checked against the configuration, ready to run.
struct Prepared {
    select: String,
    layout: crate::config::Layout,
    /// Recipients that passed the allow-list ([`policy::recipients`]).
    recipients: Vec<EmailAddress>,
}

/// Renders the query. Recipients were checked before, by [`policy::recipients`].
fn prepare(
    settings: &Settings,
    request: &ExportRequest,
    recipients: Vec<EmailAddress>,
) -> Result<Prepared, JobError> {
    let select = match &request.query {
        QuerySource::Template { name, params } => {
            let template = settings.templates.get(name).ok_or_else(|| {
                JobError::rejected(
                    "unknown_template",
                    format!("no query template named {name:?}"),
                )
            })?;
            template.render(params)?
        }
        QuerySource::Sql(sql) => {
            if !settings.sql.allow_raw {
                return Err(JobError::rejected(
                    "raw_sql_disabled",
                    "raw SQL is not enabled on this worker",
                ));
            }
            sqlcheck::check_raw(sql, &settings.sql)
                .map_err(|e| JobError::rejected("invalid_sql", e))?;
            sql.clone()
        }
    };
    Ok(Prepared {
        select,
        layout: request.layout.unwrap_or(settings.archive.layout),
        recipients,
    })
}

/// Runs `op`, retrying transient failures with capped exponential backoff and jitter.
pub async fn retrying<T, F, Fut>(
    metrics: &Metrics,
    what: &'static str,
    retries: u32,
    mut op: F,
) -> Result<T, JobError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, JobError>>,
{
    let mut delay = Duration::from_millis(200);
    let mut attempt = 0;
    loop {
        match op().await {
            Err(e) if e.is_transient() && attempt < retries => {
                attempt += 1;
                metrics.retries.with_label_values(&[what]).inc();
                tracing::warn!(operation = what, attempt, error = %e, "transient failure; retrying");
                let jitter = Duration::from_millis(fastrand::u64(0..=delay.as_millis() as u64 / 2));
                tokio::time::sleep(delay + jitter).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            other => return other,
        }
    }
}

/// How long a lease lasts unless renewed: a little less than the message's visibility, so
/// when a worker dies, whoever receives its message next finds the lease expired.
pub fn lease_duration(settings: &Settings) -> Duration {
    Duration::from_secs(
        u64::from(settings.queue.visibility_timeout_secs)
            .saturating_sub(5)
            .max(1),
    )
}

/// Processes one delivery of a valid request; `owner` is this job's lease.
pub async fn process(
    svc: &Services,
    request: &ExportRequest,
    receive_count: u32,
    owner: &LeaseOwner,
) -> Outcome {
    let retries = svc.settings.worker.stage_retries;
    let asked = request.fingerprinted();
    let item = retrying(&svc.metrics, "create state", retries, || {
        svc.state.create_or_load(
            &request.request_id,
            request.query_name(),
            request.requested_by.as_deref(),
            &asked,
        )
    })
    .await;
    let item = match item {
        Ok(item) => item,
        Err(e) => return after_error(svc, None, request, owner, &[], e).await,
    };
    // Items written before fingerprints were recorded have none; they are taken as they are.
    if item
        .fingerprint
        .as_deref()
        .is_some_and(|f| f != asked.fingerprint)
    {
        return Outcome::DeadLetter {
            code: "request_id_conflict",
            reason: format!(
                "request id {} already names another request; this message asks for something else and was not processed",
                request.request_id
            ),
        };
    }
    if item.status.is_terminal() {
        tracing::info!(
            status = item.status.as_str(),
            "request already finished; acknowledging"
        );
        return Outcome::Acknowledged(item.status);
    }
    // A request leased by a live job elsewhere is left alone.
    let item = retrying(&svc.metrics, "claim", retries, || {
        svc.state.claim(&item, owner, lease_duration(&svc.settings))
    })
    .await;
    let item = match item {
        Ok(item) => item,
        Err(e) => return after_error(svc, None, request, owner, &[], e).await,
    };
    // Only recipients that pass the allow-list are ever mailed; when the request's own
    // recipients are refused, only the configured operators may be told.
    let recipients = policy::recipients(&svc.settings, request);
    let mail_to = match &recipients {
        Ok(allowed) => allowed.clone(),
        Err(_) => policy::operator_recipients(&svc.settings),
    };
    if receive_count > svc.settings.worker.max_attempts {
        let e = JobError::rejected(
            "attempts_exhausted",
            format!(
                "delivered {receive_count} times; the limit is {}",
                svc.settings.worker.max_attempts
            ),
        );
        return after_error(svc, Some(item), request, owner, &mail_to, e).await;
    }
    let prepared = match recipients.and_then(|r| prepare(&svc.settings, request, r)) {
        Ok(p) => p,
        Err(e) => return after_error(svc, Some(item), request, owner, &mail_to, e).await,
    };
    let mut current = item.clone();
    match run_stages(svc, request, &prepared, &mut current).await {
        Ok(status) => Outcome::Finished(status),
        Err(e) => after_error(svc, Some(current), request, owner, &prepared.recipients, e).await,
    }
}

/// Advances the request until it is terminal. `item` always holds the latest recorded state.
async fn run_stages(
    svc: &Services,
    request: &ExportRequest,
    p: &Prepared,
    item: &mut StateItem,
) -> Result<Status, JobError> {
    let s = &svc.settings;
    let retries = s.worker.stage_retries;
    let rid = &request.request_id;
    loop {
        let prefix = unload::attempt_prefix(&s.upload.prefix, rid, item.attempt);
        let stage_started = std::time::Instant::now();
        svc.health.job_stage(rid.as_str(), stage_name(item.status));
        if !item.status.is_terminal() && svc.state.cancel_requested(rid.as_str()).await? {
            return Err(JobError::Cancelled);
        }
        match item.status {
            Status::Queued => {
                let attempt = item.attempt + 1;
                let prefix = unload::attempt_prefix(&s.upload.prefix, rid, attempt);
                let sql = unload::build(
                    &p.select,
                    request.format,
                    p.layout,
                    &s.redshift,
                    &s.upload.bucket,
                    &prefix,
                );
                let id = retrying(&svc.metrics, "execute statement", retries, || {
                    svc.redshift.execute(&sql, rid, attempt)
                })
                .await?;
                tracing::Span::current().record("statement_id", id.as_str());
                tracing::info!(attempt, "statement submitted");
                let changes = Changes {
                    attempt: Some(attempt),
                    statement_id: Some(id.clone()),
                    ..Changes::default()
                };
                *item = advance(
                    svc,
                    item,
                    Status::Querying,
                    changes,
                    &format!("statement {id} submitted"),
                )
                .await?;
            }
            Status::Querying => {
                let Some(id) = item.statement_id.clone() else {
                    return Err(JobError::Conflict("QUERYING without a statement id".into()));
                };
                tracing::Span::current().record("statement_id", id.as_str());
                let state = &svc.state;
                let finished = svc
                    .redshift
                    .wait(&id, || async {
                        state.cancel_requested(rid.as_str()).await.unwrap_or(false)
                    })
                    .await;
                // A transient DescribeStatement failure is retried by re-attaching later.
                let finished = finished?;
                tracing::info!(result_rows = finished.result_rows, "statement finished");
                let max_rows = s.archive.max_rows;
                if max_rows > 0 && u64::try_from(finished.result_rows).unwrap_or(0) > max_rows {
                    return Err(JobError::rejected(
                        "export_too_large",
                        format!(
                            "the query returned {} rows; at most {max_rows} may be exported (archive.max_rows)",
                            finished.result_rows
                        ),
                    ));
                }
                svc.metrics
                    .observe_stage("query", stage_started.elapsed().as_secs_f64());
                *item = advance(
                    svc,
                    item,
                    Status::Archiving,
                    Changes::default(),
                    "query finished",
                )
                .await?;
            }
            Status::Archiving => {
                let plan = Plan {
                    request_id: rid,
                    format: request.format,
                    layout: p.layout,
                    unload_prefix: &prefix,
                };
                let _slot = svc
                    .archive_slots
                    .acquire()
                    .await
                    .map_err(|_| JobError::Conflict("the archive slots are closed".into()))?;
                let archived = retrying(&svc.metrics, "build archive", retries, || {
                    svc.archiver.build(plan)
                })
                .await?;
                tracing::info!(rows = archived.rows, archive_bytes = archived.bytes, archive_key = %archived.key, "archive written");
                svc.metrics
                    .observe_stage("archive", stage_started.elapsed().as_secs_f64());
                let changes = Changes {
                    rows: Some(archived.rows),
                    archive_bytes: Some(archived.bytes),
                    archive_key: Some(archived.key.clone()),
                    ..Changes::default()
                };
                *item = advance(svc, item, Status::Notifying, changes, "archive written").await?;
                if s.upload.delete_after_archive {
                    match svc.archiver.delete_unloaded(&prefix).await {
                        Ok(n) => tracing::debug!(objects = n, "unloaded files deleted"),
                        Err(e) => tracing::warn!(error = %e, "unloaded files could not be deleted"),
                    }
                }
            }
            Status::Notifying => {
                let mut changes = Changes::default();
                if item.notified_at.is_none() {
                    let (sent_at, expires_at) =
                        notify_ready(svc, request, item, &p.recipients).await?;
                    changes.notified_at = Some(sent_at);
                    changes.url_expires_at = Some(expires_at);
                }
                *item = advance(svc, item, Status::Completed, changes, "email accepted").await?;
                svc.metrics
                    .observe_stage("notify", stage_started.elapsed().as_secs_f64());
                svc.metrics.rows_exported.inc_by(item.rows.unwrap_or(0));
                svc.metrics
                    .archive_bytes
                    .inc_by(item.archive_bytes.unwrap_or(0));
                if let Ok(created) = humantime::parse_rfc3339(&item.created_at)
                    && let Ok(total) = SystemTime::now().duration_since(created)
                {
                    svc.metrics.observe_stage("end_to_end", total.as_secs_f64());
                }
                tracing::info!("export completed");
            }
            terminal => return Ok(terminal),
        }
    }
}

/// Records a transition, retrying transient failures like any other stage step (a write
/// whose response was lost is recognised as this job's own by the state store).
async fn advance(
    svc: &Services,
    item: &StateItem,
    to: Status,
    changes: Changes,
    detail: &str,
) -> Result<StateItem, JobError> {
    retrying(
        &svc.metrics,
        "record transition",
        svc.settings.worker.stage_retries,
        || svc.state.transition(item, to, changes.clone(), detail),
    )
    .await
}

fn stage_name(status: Status) -> &'static str {
    match status {
        Status::Queued => "queued",
        Status::Querying => "querying",
        Status::Archiving => "archiving",
        Status::Notifying => "notifying",
        _ => "finishing",
    }
}

/// Presigns the link and sends the success email; returns (sent at, link expiry).
async fn notify_ready(
    svc: &Services,
    request: &ExportRequest,
    item: &StateItem,
    recipients: &[EmailAddress],
) -> Result<(String, String), JobError> {
    let s = &svc.settings;
    let key = item
        .archive_key
        .clone()
        .unwrap_or_else(|| svc.archiver.archive_key(&request.request_id));
    let filename = format!("{}.zip", request.request_id);
    let link = presign::presign(
        &svc.clients.s3,
        &svc.clients.sdk,
        &s.archive.bucket,
        &key,
        &filename,
        Duration::from_secs(s.presign.expiry_secs),
    )
    .await?;
    let expires_at = timestamp(link.expires_at);
    let bytes = item.archive_bytes.unwrap_or(0);
    let rendered = svc
        .templates
        .ready(&ReadyContext {
            request_id: request.request_id.as_str(),
            query: request.query_name(),
            rows: item.rows.unwrap_or(0),
            archive_bytes: bytes,
            archive_size: human_size(bytes),
            url: &link.url,
            expires_at: expires_at.clone(),
        })
        .map_err(|e| JobError::Email {
            message: e,
            transient: false,
        })?;
    let mail_id = format!("{}.{}", request.request_id, item.attempt);
    let id = retrying(&svc.metrics, "send email", s.worker.stage_retries, || {
        svc.mailer.send(recipients, &rendered, &mail_id)
    })
    .await?;
    tracing::info!(transport = svc.mailer.transport_name(), recipients = recipients.len(), message_id = ?id, "email accepted");
    Ok((timestamp(SystemTime::now()), expires_at))
}
