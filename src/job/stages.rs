//! The stage machine: what one export does in each recorded state, and the transition it
//! records when that is done — QUEUED → QUERYING → ARCHIVING → NOTIFYING → COMPLETED.
//! [`run_stages`] is the whole of it; every step is recorded before the next one starts,
//! so a job that stops anywhere is resumed from the recorded state by whoever receives the
//! message next (docs/ARCHITECTURE.md, "The state machine").

use std::time::{Instant, SystemTime};

use crate::archive::Plan;
use crate::error::JobError;
use crate::message::{EmailAddress, ExportRequest};
use crate::notify::templates::{ReadyContext, human_size};
use crate::policy::Prepared;
use crate::retry::{retrying, step};
use crate::services::Services;
use crate::state::{StateItem, Status, timestamp};
use crate::{presign, unload};

/// Advances the request until it is terminal. `item` always holds the latest recorded state.
pub(super) async fn run_stages(
    svc: &Services,
    request: &ExportRequest,
    p: &Prepared,
    item: &mut StateItem,
) -> Result<Status, JobError> {
    let rid = request.request_id.as_str();
    loop {
        let started = Instant::now();
        svc.health.job_stage(rid, stage_name(item.status));
        // As last read; a cancel asked for since makes the next transition fail its
        // condition, which the state store reports as `Cancelled`.
        if !item.status.is_terminal() && item.cancel_requested {
            return Err(JobError::Cancelled);
        }
        let (to, changes, detail) = match item.status {
            Status::Queued => submit(svc, request, p, item).await?,
            Status::Querying => query(svc, request, item).await?,
            Status::Archiving => archive(svc, request, p, item).await?,
            Status::Notifying => notify(svc, request, p, item).await?,
            terminal => return Ok(terminal),
        };
        *item = advance(svc, item, to, &*changes, &detail).await?;
        after(svc, item, started).await;
    }
}

/// What a stage did: the status to record, the item's other changes, and the history
/// event's detail.
type Step = (Status, Changes, String);

/// Changes a stage makes to the item besides its status.
type Changes = Box<dyn Fn(&mut StateItem) + Send + Sync>;

/// No change besides the status.
fn unchanged() -> Changes {
    Box::new(|_| {})
}

/// QUEUED: submit the UNLOAD of the next attempt (its ClientToken makes a repeat harmless).
async fn submit(
    svc: &Services,
    request: &ExportRequest,
    p: &Prepared,
    item: &StateItem,
) -> Result<Step, JobError> {
    let s = &svc.settings;
    let rid = &request.request_id;
    let attempt = item.attempt + 1;
    super::fleet::take_statement_slot(svc, item).await?;
    let prefix = unload::attempt_prefix(&s.upload.prefix, rid, attempt);
    let sql = unload::build(
        &p.select,
        request.format,
        p.layout,
        &s.redshift,
        &s.upload.bucket,
        &prefix,
    );
    let id = retrying(svc.retry, &svc.metrics, step::EXECUTE_STATEMENT, || {
        svc.redshift.execute(&sql, rid, attempt)
    })
    .await?;
    tracing::Span::current().record("statement_id", id.as_str());
    tracing::info!(attempt, "statement submitted");
    let detail = format!("statement {id} submitted");
    let changes: Changes = Box::new(move |next| {
        next.attempt = attempt;
        next.statement_id = Some(id.clone());
    });
    Ok((Status::Querying, changes, detail))
}

/// QUERYING: wait for the recorded statement (re-attaching after a restart) and hold the
/// result to `archive.max_rows`.
async fn query(
    svc: &Services,
    request: &ExportRequest,
    item: &StateItem,
) -> Result<Step, JobError> {
    let Some(id) = item.statement_id.clone() else {
        return Err(JobError::Conflict("QUERYING without a statement id".into()));
    };
    tracing::Span::current().record("statement_id", id.as_str());
    let rid = request.request_id.as_str();
    super::fleet::hold_statement_slot(svc, rid).await;
    // A transient DescribeStatement failure is retried by re-attaching later.
    let finished = svc
        .redshift
        .wait(&id, || async {
            svc.state.cancel_requested(rid).await.unwrap_or(false)
        })
        .await;
    // The statement has ended unless the wait gave up on a passing failure.
    if !matches!(&finished, Err(e) if e.is_transient()) {
        super::fleet::give_statement_slot(svc, rid).await;
    }
    let finished = finished?;
    tracing::info!(result_rows = finished.result_rows, "statement finished");
    let max_rows = svc.settings.archive.max_rows;
    if max_rows > 0 && u64::try_from(finished.result_rows).unwrap_or(0) > max_rows {
        return Err(JobError::rejected(
            "export_too_large",
            format!(
                "the query returned {} rows; at most {max_rows} may be exported (archive.max_rows)",
                finished.result_rows
            ),
        ));
    }
    Ok((Status::Archiving, unchanged(), "query finished".into()))
}

/// ARCHIVING: build the zip from the attempt's unloaded files (the same key every time, so a
/// rebuild replaces it), within the archive slots.
async fn archive(
    svc: &Services,
    request: &ExportRequest,
    p: &Prepared,
    item: &StateItem,
) -> Result<Step, JobError> {
    let prefix = unload::attempt_prefix(
        &svc.settings.upload.prefix,
        &request.request_id,
        item.attempt,
    );
    let plan = Plan {
        request_id: &request.request_id,
        format: request.format,
        layout: p.layout,
        unload_prefix: &prefix,
    };
    let _slot = svc
        .archive_slots
        .acquire()
        .await
        .map_err(|_| JobError::Conflict("the archive slots are closed".into()))?;
    let archived = retrying(svc.retry, &svc.metrics, step::BUILD_ARCHIVE, || {
        svc.archiver.build(plan)
    })
    .await?;
    tracing::info!(rows = archived.rows, archive_bytes = archived.bytes, archive_key = %archived.key, "archive written");
    let detail = match &archived.recompressed {
        Some(reason) => format!("archive written, recompressed: {reason}"),
        None => "archive written".into(),
    };
    let entries = serde_json::to_string(&archived.entries)
        .map_err(|e| JobError::Archive(format!("the archive's entries: {e}")))?;
    let changes: Changes = Box::new(move |next| {
        next.rows = Some(archived.rows);
        next.archive_bytes = Some(archived.bytes);
        next.archive_key = Some(archived.key.clone());
        next.archive_sha256 = Some(archived.sha256.clone());
        next.archive_entries = Some(entries.clone());
    });
    Ok((Status::Notifying, changes, detail))
}

/// NOTIFYING: send the email (when the request asked for one) unless its acceptance was
/// recorded already; COMPLETED records the event destinations still to be told.
async fn notify(
    svc: &Services,
    request: &ExportRequest,
    p: &Prepared,
    item: &StateItem,
) -> Result<Step, JobError> {
    let destinations = p.destinations.clone();
    if item.notified_at.is_some() || p.recipients.is_empty() {
        let detail = if p.recipients.is_empty() {
            "completed; no email asked for"
        } else {
            "email accepted"
        };
        let changes: Changes = Box::new(move |next| next.events_due = destinations.clone());
        return Ok((Status::Completed, changes, detail.into()));
    }
    let (sent_at, expires_at) = notify_ready(svc, request, item, &p.recipients).await?;
    let changes: Changes = Box::new(move |next| {
        next.notified_at = Some(sent_at.clone());
        next.url_expires_at = Some(expires_at.clone());
        next.events_due = destinations.clone();
    });
    Ok((Status::Completed, changes, "email accepted".into()))
}

/// What follows a recorded transition: the finished stage's duration, the unloaded files
/// once the archive holds them, and the totals of a completed export.
async fn after(svc: &Services, item: &StateItem, started: Instant) {
    let elapsed = started.elapsed().as_secs_f64();
    let m = &svc.metrics;
    match item.status {
        Status::Archiving => m.observe_stage("query", elapsed),
        Status::Notifying => {
            m.observe_stage("archive", elapsed);
            if svc.settings.upload.delete_after_archive {
                delete_unloaded(svc, item).await;
            }
        }
        Status::Completed => {
            m.observe_stage("notify", elapsed);
            m.rows_exported.inc_by(item.rows.unwrap_or(0));
            m.archive_bytes.inc_by(item.archive_bytes.unwrap_or(0));
            if let Ok(created) = humantime::parse_rfc3339(&item.created_at)
                && let Ok(total) = SystemTime::now().duration_since(created)
            {
                m.observe_stage("end_to_end", total.as_secs_f64());
            }
            tracing::info!("export completed");
        }
        _ => {}
    }
}

/// Deletes the attempt's unloaded files once the archive is recorded (best effort: the
/// bucket's lifecycle rule is the safety net).
async fn delete_unloaded(svc: &Services, item: &StateItem) {
    let Ok(rid) = crate::message::RequestId::parse(&item.request_id) else {
        return;
    };
    let prefix = unload::attempt_prefix(&svc.settings.upload.prefix, &rid, item.attempt);
    match svc.archiver.delete_unloaded(&prefix).await {
        Ok(n) => tracing::debug!(objects = n, "unloaded files deleted"),
        Err(e) => tracing::warn!(error = %e, "unloaded files could not be deleted"),
    }
}

/// Records a transition, retrying transient failures like any other stage step (a write
/// whose response was lost is recognised as this job's own by the state store).
pub(super) async fn advance(
    svc: &Services,
    item: &StateItem,
    to: Status,
    changes: &(dyn Fn(&mut StateItem) + Send + Sync),
    detail: &str,
) -> Result<StateItem, JobError> {
    retrying(svc.retry, &svc.metrics, step::RECORD_TRANSITION, || {
        svc.state.transition(item, to, changes, detail)
    })
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
    let key = item
        .archive_key
        .clone()
        .unwrap_or_else(|| svc.archiver.archive_key(&request.request_id));
    let link = presign::archive_link(svc, &key, request.request_id.as_str()).await?;
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
            sha256: item.archive_sha256.as_deref().unwrap_or_default(),
        })
        .map_err(|e| JobError::Email {
            message: e,
            transient: false,
        })?;
    let mail_id = format!("{}.{}", request.request_id, item.attempt);
    let id = retrying(svc.retry, &svc.metrics, step::SEND_EMAIL, || {
        svc.mailer.send(recipients, &rendered, &mail_id)
    })
    .await?;
    tracing::info!(transport = svc.mailer.transport_name(), recipients = recipients.len(), message_id = ?id, "email accepted");
    Ok((timestamp(SystemTime::now()), expires_at))
}
