//! The fleet-wide cap on running Redshift statements (`redshift.max_concurrent_statements`):
//! a job takes a slot of the semaphore in the state table before it submits its UNLOAD and
//! gives it back when the statement has ended. While it waits, its message stays invisible
//! (the heartbeat keeps it, and renews the slot once held), `/jobs` shows the stage
//! "waiting for a statement slot", `statement_slot_waiting` counts it and the history says
//! so once (docs/ARCHITECTURE.md, "Fleet-wide limits").
//!
//! Fair shares (`worker.max_in_flight_per_requester`) use the same semaphores, one per
//! `requested_by`: a job takes its requester's slot before its stages and gives it back when
//! it ends. A request over the limit does not wait in a job slot — that would let one
//! requester's flood fill every worker — but goes back on the queue as a new message after
//! `worker.retry_delay_secs`, so the worker takes other requesters' messages meanwhile and the
//! wait uses none of the request's attempts.

use std::time::Instant;

use prometheus::IntGauge;

use super::Outcome;
use crate::error::JobError;
use crate::message::ExportRequest;
use crate::redshift::CANCEL_CHECK_EVERY;
use crate::retry::{Backoff, retrying, step};
use crate::services::Services;
use crate::state::{LeaseOwner, STATEMENTS, StateItem, Taken, requester_semaphore};

/// Counts a job in `statement_slot_waiting` for as long as it lives (also when the job is
/// stopped in the middle of the wait).
struct Waiting(IntGauge);

impl Waiting {
    fn start(gauge: &IntGauge) -> Waiting {
        gauge.inc();
        Waiting(gauge.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Waits for a statement slot for `item`'s request; returns once it holds one (at once when
/// there is no cap). A cancel asked for meanwhile ends the wait.
pub(super) async fn take_statement_slot(svc: &Services, item: &StateItem) -> Result<(), JobError> {
    let cap = svc.settings.redshift.max_concurrent_statements;
    if cap == 0 {
        return Ok(());
    }
    let rid = item.request_id.as_str();
    let lease = super::lease_duration(&svc.settings);
    let mut waiting = None;
    let mut delays = Backoff::SLOT.delays();
    let mut checked = Instant::now();
    loop {
        let taken = retrying(svc.retry, &svc.metrics, step::TAKE_SLOT, || {
            svc.state.take_slot(STATEMENTS, rid, cap, lease, |holder| {
                statement_running(svc, holder)
            })
        })
        .await?;
        let Taken::Full { in_use } = taken else {
            if waiting.is_some() {
                tracing::info!("statement slot taken");
            }
            return Ok(());
        };
        if waiting.is_none() {
            tracing::info!(in_use, cap, "waiting for a Redshift statement slot");
            svc.metrics.statement_slot_waits.inc();
            svc.health.job_stage(rid, "waiting for a statement slot");
            let detail = format!(
                "waiting for a Redshift statement slot ({in_use} of {cap} in use across the fleet)"
            );
            if let Err(e) = svc.state.note(item, &detail).await {
                tracing::debug!(error = %e, "the wait was not recorded in the history");
            }
            waiting = Some(Waiting::start(&svc.metrics.statement_slot_waiting));
        }
        if checked.elapsed() >= CANCEL_CHECK_EVERY {
            checked = Instant::now();
            if svc.state.cancel_requested(rid).await.unwrap_or(false) {
                return Err(JobError::Cancelled);
            }
        }
        tokio::time::sleep(delays.next().unwrap_or(Backoff::SLOT.max)).await;
    }
}

/// Whether the statement of request `holder`, whose slot lapsed (its worker died), still runs:
/// then the slot stays taken until it ends, so the cap holds even when nobody re-attaches to
/// it in time. A request that recorded no running statement holds nothing.
async fn statement_running(svc: &Services, holder: String) -> bool {
    match svc.state.load(&holder).await {
        Ok(Some(item)) => match (&item.status, &item.statement_id) {
            (crate::state::Status::Querying, Some(id)) => svc.redshift.is_running(id).await,
            _ => false,
        },
        Ok(None) => false,
        // Unknown: taken to run, like a statement whose status cannot be read.
        Err(_) => true,
    }
}

/// Records the request's running statement as holding a slot, whatever the count: a job that
/// re-attaches to a statement submitted before (by a worker that died) holds its slot again.
pub(super) async fn hold_statement_slot(svc: &Services, request_id: &str) {
    if svc.settings.redshift.max_concurrent_statements == 0 {
        return;
    }
    let lease = super::lease_duration(&svc.settings);
    if let Err(e) = svc.state.hold_slot(STATEMENTS, request_id, lease).await {
        tracing::warn!(error = %e, "the running statement's slot could not be recorded");
    }
}

/// Gives the request's statement slot back once its statement has ended (best effort: a slot
/// not given back lapses with its lease).
pub async fn give_statement_slot(svc: &Services, request_id: &str) {
    if svc.settings.redshift.max_concurrent_statements == 0 {
        return;
    }
    if let Err(e) = svc.state.give_slot(STATEMENTS, request_id).await {
        tracing::warn!(error = %e, "the statement slot was not given back; it lapses with its lease");
    }
}

/// Takes a slot of the request's requester (nothing to do without a limit or a
/// `requested_by`); `Some(Outcome::Defer)` when the requester is at its limit.
pub(super) async fn take_requester_slot(
    svc: &Services,
    item: &StateItem,
    request: &ExportRequest,
    owner: &LeaseOwner,
    deferrals: u32,
) -> Option<Outcome> {
    let cap = svc.settings.worker.max_in_flight_per_requester;
    let by = request.requested_by.as_deref().filter(|_| cap > 0)?;
    let rid = request.request_id.as_str();
    let lease = super::lease_duration(&svc.settings);
    let semaphore = requester_semaphore(by);
    // A requester slot whose holder stopped renewing it is free: its job is gone.
    let taken = retrying(svc.retry, &svc.metrics, step::TAKE_SLOT, || {
        svc.state
            .take_slot(&semaphore, rid, cap, lease, |_| async { false })
    })
    .await;
    let in_use = match taken {
        Ok(Taken::Held) => return None,
        Ok(Taken::Full { in_use }) => in_use,
        // The semaphore cannot be read: like any passing failure, the message comes back.
        Err(e) => {
            tracing::warn!(error = %e, "the requester's slots could not be read; the message will be retried");
            return Some(Outcome::Retry(std::time::Duration::from_secs(u64::from(
                svc.settings.worker.retry_delay_secs,
            ))));
        }
    };
    let delay = std::time::Duration::from_secs(u64::from(svc.settings.worker.retry_delay_secs));
    tracing::info!(
        in_use,
        cap,
        deferrals,
        delay_secs = delay.as_secs(),
        "the requester has as many requests in flight as it may; putting this one back on the queue"
    );
    svc.metrics.requester_deferrals.inc();
    if deferrals == 0 {
        let detail = format!(
            "waiting: its requester has {in_use} of {cap} requests in flight across the fleet"
        );
        if let Err(e) = svc.state.note(item, &detail).await {
            tracing::debug!(error = %e, "the wait was not recorded in the history");
        }
    }
    // Whoever receives the message next may take the request at once.
    if let Err(e) = svc.state.release_deferred(rid, owner).await {
        tracing::debug!(error = %e, "the lease was not released");
    }
    Some(Outcome::Defer(delay))
}

/// Gives the requester's slot back when the job ends (best effort: it lapses with its lease).
pub(super) async fn give_requester_slot(svc: &Services, request: &ExportRequest) {
    let Some(by) = request
        .requested_by
        .as_deref()
        .filter(|_| svc.settings.worker.max_in_flight_per_requester > 0)
    else {
        return;
    };
    if let Err(e) = svc
        .state
        .give_slot(&requester_semaphore(by), request.request_id.as_str())
        .await
    {
        tracing::warn!(error = %e, "the requester slot was not given back; it lapses with its lease");
    }
}
