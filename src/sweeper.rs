//! The sweeper: no request stays open for ever, whatever happened to its message (deleted by
//! hand, dead-lettered by the queue's own redrive, expired by retention).
//!
//! Every `sweeper.interval_secs` each replica reads the sparse index of open requests
//! ([`crate::state::OPEN_INDEX`]) for requests that have not moved for `sweeper.idle_secs`,
//! and looks at each with a consistent read. One that no live job holds has lost its
//! message: it is sent again from the request recorded in its state item (a new message with
//! the same request id and fingerprint, so the worker that receives it resumes the request
//! from its recorded state), at most `sweeper.max_redrives` times; after that it fails with
//! `orphaned`. Each action is one conditional write that bumps the version, so with any
//! number of replicas sweeping at once exactly one acts. The cost is one index query per
//! partition per interval and one read per idle request.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::aws::AwsResultExt;
use crate::error::JobError;
use crate::job;
use crate::message::{self, RequestId};
use crate::policy;
use crate::retry::Backoff;
use crate::services::Services;
use crate::shutdown::Shutdown;
use crate::state::{OPEN_SHARDS, StateItem, timestamp};

/// Idle requests looked at per index partition and sweep; the rest wait for the next sweep.
const PER_SHARD: i32 = 100;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    pub redriven: u32,
    pub orphaned: u32,
    /// Ended requests whose events were still owed, told now.
    pub told: u32,
}

/// Sweeps every `interval` (with up to 10 % jitter, so replicas spread out) until shutdown.
pub async fn run(svc: Arc<Services>, shutdown: Shutdown) {
    let interval = Duration::from_secs(svc.settings.sweeper.interval_secs);
    let mut delays = Backoff {
        initial: interval,
        max: interval,
        growth_percent: 100,
        jitter_percent: 10,
    }
    .delays();
    loop {
        let delay = delays.next().unwrap_or(interval);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.stopping() => return,
        }
        match sweep(&svc).await {
            Ok(done) => {
                svc.metrics.sweeps.with_label_values(&["ok"]).inc();
                if done != Sweep::default() {
                    tracing::info!(
                        redriven = done.redriven,
                        orphaned = done.orphaned,
                        told = done.told,
                        "sweep found requests whose message had gone"
                    );
                }
            }
            Err(e) => {
                svc.metrics.sweeps.with_label_values(&["error"]).inc();
                tracing::warn!(error = %e, "sweep failed; trying again next interval");
            }
        }
    }
}

/// Sets `open_request_idle_seconds`: how long the open request that has not moved for longest
/// has not moved (one query of one item per index partition).
async fn measure_idle(svc: &Services) -> Result<(), JobError> {
    let mut oldest: Option<String> = None;
    for shard in 0..OPEN_SHARDS {
        if let Some(at) = svc.state.longest_idle_since(shard).await? {
            oldest = Some(match oldest {
                Some(o) if o <= at => o,
                _ => at,
            });
        }
    }
    let idle = oldest
        .and_then(|at| humantime::parse_rfc3339(&at).ok())
        .and_then(|at| SystemTime::now().duration_since(at).ok())
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    svc.metrics.open_request_idle_seconds.set(idle);
    Ok(())
}

/// One sweep over every index partition.
pub async fn sweep(svc: &Services) -> Result<Sweep, JobError> {
    measure_idle(svc).await?;
    let idle = Duration::from_secs(svc.settings.sweeper.idle_secs);
    let cutoff = timestamp(SystemTime::now() - idle);
    let mut done = Sweep::default();
    for shard in 0..OPEN_SHARDS {
        for request_id in svc
            .state
            .idle_open_requests(shard, &cutoff, PER_SHARD)
            .await?
        {
            let item = match svc.state.load(&request_id).await {
                Ok(Some(item)) => item,
                Ok(None) => continue,
                // One item this version cannot read must not stop the sweep of the others.
                Err(e @ JobError::Unreadable(_)) => {
                    tracing::warn!(request_id, error = %e, "skipping a request this version cannot read");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let span = tracing::info_span!("sweep", request_id = %request_id);
            let _entered = span.enter();
            if owes_events(&item, &cutoff) {
                // Its job ended it and died before telling the destinations, and its message
                // is gone (a redelivery would have told them).
                match job::deliver_due(svc, &item).await {
                    Ok(()) => {
                        svc.metrics
                            .sweeper_actions
                            .with_label_values(&["told"])
                            .inc();
                        done.told += 1;
                    }
                    Err(e) => tracing::warn!(error = %e, "the events owed could not be recorded"),
                }
                continue;
            }
            if !lost(&item, &cutoff) {
                continue;
            }
            match settle(svc, item).await? {
                Some(Action::Redriven) => done.redriven += 1,
                Some(Action::Orphaned) => done.orphaned += 1,
                None => {}
            }
        }
    }
    Ok(done)
}

/// Ended, still owing events, and not moved since `cutoff`.
fn owes_events(item: &StateItem, cutoff: &str) -> bool {
    item.status.is_terminal() && !item.events_due.is_empty() && item.updated_at.as_str() < cutoff
}

/// Open, not moved since `cutoff`, and no live job holds it.
fn lost(item: &StateItem, cutoff: &str) -> bool {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    !item.status.is_terminal()
        && item.updated_at.as_str() < cutoff
        && item.lease_expires_at.is_none_or(|until| until < now)
}

enum Action {
    Redriven,
    Orphaned,
}

/// Sends the request again, or fails it with `orphaned`. None when another replica or a
/// worker got to it first.
async fn settle(svc: &Services, item: StateItem) -> Result<Option<Action>, JobError> {
    let s = &svc.settings;
    let Ok(request_id) = RequestId::parse(&item.request_id) else {
        return Ok(None);
    };
    // The request as it was asked for (None for an item recorded without one).
    let body = item
        .request
        .as_deref()
        .filter(|c| !c.is_empty())
        .and_then(|c| message::redrive_body(c, &request_id).ok());
    let request = body.as_deref().and_then(|b| {
        message::parse(
            b.as_bytes(),
            request_id.as_str(),
            s.queue.max_message_bytes,
            &s.compat,
        )
        .ok()
    });
    if let Some(body) = body.as_deref()
        && item.redrives < s.sweeper.max_redrives
    {
        let detail = format!(
            "its message had gone; sent again by the sweeper ({} of {})",
            item.redrives + 1,
            s.sweeper.max_redrives
        );
        if !svc.state.mark_redriven(&item, &detail).await? {
            return Ok(None);
        }
        svc.clients
            .sqs
            .send_message()
            .queue_url(&s.queue.url)
            .message_body(body)
            .send()
            .await
            .aws("sqs", "SendMessage")?;
        tracing::warn!(
            status = item.status.as_str(),
            redrives = item.redrives + 1,
            "request re-driven: its message had gone"
        );
        svc.metrics
            .sweeper_actions
            .with_label_values(&["redriven"])
            .inc();
        return Ok(Some(Action::Redriven));
    }
    let audience = policy::audience(s, request.as_ref());
    let e = JobError::rejected(
        "orphaned",
        format!(
            "the request stopped moving in {} with no worker holding it; it was sent again {} times",
            item.status.as_str(),
            item.redrives
        ),
    );
    let query = item.query.clone().unwrap_or_default();
    match job::fail(svc, item, &request_id, &query, &audience, e).await {
        job::Outcome::Finished(_) => {
            svc.metrics
                .sweeper_actions
                .with_label_values(&["orphaned"])
                .inc();
            Ok(Some(Action::Orphaned))
        }
        _ => Ok(None),
    }
}
