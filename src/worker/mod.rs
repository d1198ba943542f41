//! The receive loop: long-poll SQS for as many messages as there are free job slots, and
//! hand each to [`delivery`], which runs its job while a [`heartbeat`] keeps the message
//! invisible, then deletes, releases or leaves the message according to the outcome. Stops
//! receiving as soon as shutdown is signalled and lets the jobs in hand finish, within the
//! drain deadline.

mod dead_letter;
mod delivery;
mod heartbeat;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::aws::AwsResultExt;
use crate::retry::Backoff;
use crate::services::Services;
use crate::shutdown::{RELEASE_MARGIN, Shutdown};

/// While every job slot is busy, the loop reports progress this often (for the watchdog).
const SLOT_WAIT_TICK: Duration = Duration::from_secs(10);

/// The longest the receive loop can go without progress and still be working: one receive
/// with all the SDK's attempts timing out, their backoff, then the longest receive backoff.
pub fn stall_limit(wait_secs: u32) -> Duration {
    let attempt = Duration::from_secs(u64::from(wait_secs)) + crate::aws::LONG_POLL_SLACK;
    attempt * crate::retry::SDK_MAX_ATTEMPTS
        + crate::retry::SDK_MAX_BACKOFF * (crate::retry::SDK_MAX_ATTEMPTS - 1)
        + Backoff::RECEIVE.max
        + SLOT_WAIT_TICK
}

/// The most messages one ReceiveMessage returns (SQS's limit).
const SQS_MAX_BATCH: usize = 10;

/// Runs until shutdown is signalled, then waits for the jobs in flight: each has the grace
/// period before it releases its message, and all of them together the drain deadline
/// (grace plus [`RELEASE_MARGIN`]).
pub async fn run(svc: Arc<Services>, shutdown: Shutdown) {
    let jobs = svc.settings.worker.max_concurrent_jobs;
    let slots = Arc::new(Semaphore::new(jobs));
    svc.metrics
        .job_slots
        .set(i64::try_from(jobs).unwrap_or(i64::MAX));
    tracing::info!(
        worker = svc.state.worker(),
        slots = jobs,
        "receiving export requests"
    );
    let mut delays = Backoff::RECEIVE.delays();
    while !shutdown.is_stopping() {
        svc.health.loop_progressed();
        // Receive only what can start now: wait for a free slot first.
        let Some(mut permits) = free_slots(&svc, &slots, &shutdown).await else {
            break;
        };
        let received = tokio::select! {
            r = receive(&svc, permits.len()) => r,
            () = shutdown.stopping() => break,
        };
        svc.health.loop_progressed();
        let messages = match received {
            Ok(messages) => {
                delays.reset();
                messages
            }
            Err(e) => {
                let delay = delays.next().unwrap_or(Backoff::RECEIVE.max);
                tracing::warn!(error = %e, retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "receiving from the queue failed");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.stopping() => break,
                }
                continue;
            }
        };
        // Each message takes one permit, released when its job ends; unused permits go back now.
        for (m, permit) in messages.into_iter().zip(permits.drain(..)) {
            let (svc, job_shutdown) = (svc.clone(), shutdown.clone());
            shutdown.spawn(async move {
                delivery::handle(svc, m, job_shutdown).await;
                drop(permit);
            });
        }
    }
    drain(&svc, &slots, jobs).await;
}

/// At least one free job slot (waiting for it, which is progress: the jobs in flight free
/// them), and as many more as are free now, up to a batch; None when shutdown came first.
async fn free_slots(
    svc: &Services,
    slots: &Arc<Semaphore>,
    shutdown: &Shutdown,
) -> Option<Vec<OwnedSemaphorePermit>> {
    let first = loop {
        tokio::select! {
            permit = slots.clone().acquire_owned() => break permit.ok()?,
            () = tokio::time::sleep(SLOT_WAIT_TICK) => svc.health.loop_progressed(),
            () = shutdown.stopping() => return None,
        }
    };
    let mut permits = vec![first];
    while permits.len() < SQS_MAX_BATCH {
        match slots.clone().try_acquire_owned() {
            Ok(p) => permits.push(p),
            Err(_) => break,
        }
    }
    Some(permits)
}

async fn receive(
    svc: &Services,
    max: usize,
) -> Result<Vec<aws_sdk_sqs::types::Message>, crate::aws::AwsError> {
    let q = &svc.settings.queue;
    let out = svc
        .clients
        .sqs
        .receive_message()
        .queue_url(&q.url)
        .max_number_of_messages(i32::try_from(max).unwrap_or(1))
        .wait_time_seconds(i32::try_from(q.wait_secs).unwrap_or(20))
        .visibility_timeout(i32::try_from(q.visibility_timeout_secs).unwrap_or(i32::MAX))
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .message_attribute_names(delivery::DEFERRALS)
        .send()
        .await
        .aws("sqs", "ReceiveMessage")?;
    Ok(out.messages.unwrap_or_default())
}

/// Waits until every job slot is free again — every job finished or released its message —
/// or the drain deadline passes.
async fn drain(svc: &Services, slots: &Semaphore, jobs: usize) {
    let in_flight = jobs - slots.available_permits();
    tracing::info!(
        in_flight,
        "stopped receiving; waiting for the jobs in flight"
    );
    let deadline = Duration::from_secs(svc.settings.worker.shutdown_grace_secs) + RELEASE_MARGIN;
    let all = u32::try_from(jobs).unwrap_or(u32::MAX);
    match tokio::time::timeout(deadline, slots.acquire_many(all)).await {
        Ok(_) => tracing::info!("all jobs finished or released"),
        Err(_) => tracing::error!(
            deadline_secs = deadline.as_secs(),
            still_running = jobs - slots.available_permits(),
            "jobs still running at the drain deadline; exiting without them (their messages come back when their visibility ends)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stall_limit_covers_a_receive_with_every_retry_and_stays_under_the_watchdog() {
        let limit = stall_limit(20);
        // 3 attempts of 20 + 15 s, 2 SDK backoffs of at most 20 s, a minute of receive
        // backoff, a slot-wait tick: deploy/systemd's WatchdogSec=300 must exceed it.
        assert_eq!(limit, Duration::from_secs(215));
        assert!(limit < Duration::from_secs(300));
    }
}
