//! The decoder permits of the process (`archive.decode_threads`), handed out earliest part
//! first, with a bound on how long any part waits.
//!
//! Every part to decode takes a ticket when it is started; a permit that comes free goes to
//! the waiting part with the lowest ticket, and a part holding one gives it up after a batch
//! when a part started before it is waiting. The writer takes the parts in the order they were
//! started, so the parts decoding at once finish in that order: the first part is ready to be
//! written after its own decoding, not after the decoding of every part started with it
//! (a fair semaphore hands permits round the parts batch by batch, and they all finish
//! together). A part that has waited [`OVERDUE`] is served first, whatever its ticket, and a
//! holder gives its permit up to it after the batch in hand: an archive started later (a
//! one-row export beside a large one) is never held up for more than that and a batch, and
//! the parts of one archive still finish nearly in order.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long a part waits for a permit before it is served ahead of earlier parts.
pub(super) const OVERDUE: Duration = Duration::from_millis(20);

/// The permits and the parts waiting for one; cheap to clone.
#[derive(Clone, Debug)]
pub(super) struct Decoders {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    tickets: AtomicU64,
    queue: Mutex<Queue>,
}

#[derive(Debug)]
struct Queue {
    /// Permits nobody holds. Never above zero while a part waits.
    free: usize,
    /// Parts waiting, by ticket: since when, and where their permit goes.
    waiting: BTreeMap<u64, (Instant, oneshot::Sender<Permit>)>,
}

impl Queue {
    /// The part a free permit goes to: the one that has waited longest if that is
    /// [`OVERDUE`], else the earliest started.
    fn next(&mut self) -> Option<(u64, oneshot::Sender<Permit>)> {
        let longest = self
            .waiting
            .iter()
            .min_by_key(|(_, (since, _))| *since)
            .filter(|(_, (since, _))| since.elapsed() >= OVERDUE)
            .map(|(&ticket, _)| ticket);
        let ticket = longest.or_else(|| self.waiting.keys().next().copied())?;
        let (_, tx) = self.waiting.remove(&ticket)?;
        Some((ticket, tx))
    }
}

/// Leave to decode one batch after another; handed on to the next part in line on drop.
#[derive(Debug)]
pub(super) struct Permit {
    shared: Arc<Shared>,
    ticket: u64,
}

impl Decoders {
    pub(super) fn new(permits: usize) -> Self {
        Decoders {
            shared: Arc::new(Shared {
                tickets: AtomicU64::new(0),
                queue: Mutex::new(Queue {
                    free: permits,
                    waiting: BTreeMap::new(),
                }),
            }),
        }
    }

    /// A part's place in line, taken when it is started.
    pub(super) fn ticket(&self) -> u64 {
        self.shared.tickets.fetch_add(1, Ordering::Relaxed)
    }

    /// A permit for the part holding `ticket`, when one is free or it is this part's turn.
    pub(super) async fn acquire(&self, ticket: u64) -> Permit {
        loop {
            let waiting = {
                let mut queue = self.shared.lock();
                if queue.free > 0 {
                    queue.free -= 1;
                    return Permit {
                        shared: self.shared.clone(),
                        ticket,
                    };
                }
                let (tx, rx) = oneshot::channel();
                queue.waiting.insert(ticket, (Instant::now(), tx));
                rx
            };
            // A permit handed to an acquire that was dropped goes on by its own drop. A
            // sender is dropped unsent only with the queue, which this pool keeps alive.
            if let Ok(mut permit) = waiting.await {
                permit.ticket = ticket;
                return permit;
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue is consistent between statements; a panic elsewhere leaves it usable.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Permit {
    /// Whether a part started before this one, or one that has waited [`OVERDUE`], is
    /// waiting for a permit.
    pub(super) fn owed(&self) -> bool {
        let queue = self.shared.lock();
        queue
            .waiting
            .first_key_value()
            .is_some_and(|(&first, _)| first < self.ticket)
            || queue
                .waiting
                .values()
                .any(|(since, _)| since.elapsed() >= OVERDUE)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let next = {
            let mut queue = self.shared.lock();
            let next = queue.next();
            if next.is_none() {
                queue.free += 1;
            }
            next
        };
        // Sent outside the lock: a permit that cannot be delivered (its acquire was dropped)
        // comes back and is dropped, which hands it on to the next part in line.
        if let Some((ticket, tx)) = next {
            let _ = tx.send(Permit {
                shared: self.shared.clone(),
                ticket,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A part waiting for a permit; its ticket once it has one.
    fn waiting(decoders: &Decoders, ticket: u64) -> tokio::task::JoinHandle<u64> {
        let d = decoders.clone();
        tokio::spawn(async move { d.acquire(ticket).await.ticket })
    }

    #[tokio::test(start_paused = true)]
    async fn a_free_permit_goes_to_the_earliest_waiting_part() {
        let decoders = Decoders::new(1);
        let (first, second, third) = (decoders.ticket(), decoders.ticket(), decoders.ticket());
        let held = decoders.acquire(third).await;
        assert!(!held.owed(), "nobody waits yet");
        let later = waiting(&decoders, second);
        tokio::task::yield_now().await;
        let earlier = waiting(&decoders, first);
        tokio::task::yield_now().await;
        assert!(held.owed(), "parts started before the holder wait");
        drop(held);
        assert_eq!(earlier.await.ok(), Some(first));
        assert_eq!(later.await.ok(), Some(second));
    }

    #[tokio::test(start_paused = true)]
    async fn a_part_that_has_waited_long_is_served_before_earlier_ones() {
        let decoders = Decoders::new(1);
        let (first, second, late) = (decoders.ticket(), decoders.ticket(), decoders.ticket());
        let held = decoders.acquire(first).await;
        let overdue = waiting(&decoders, late);
        tokio::task::yield_now().await;
        assert!(
            !held.owed(),
            "a later part that has just come waits its turn"
        );
        tokio::time::sleep(OVERDUE).await;
        let earlier = waiting(&decoders, second);
        tokio::task::yield_now().await;
        assert!(held.owed(), "the late part has waited long enough");
        drop(held);
        assert_eq!(overdue.await.ok(), Some(late));
        assert_eq!(earlier.await.ok(), Some(second));
    }

    #[tokio::test(start_paused = true)]
    async fn a_permit_handed_to_a_dropped_acquire_is_not_lost() {
        let decoders = Decoders::new(1);
        let (a, b, c) = (decoders.ticket(), decoders.ticket(), decoders.ticket());
        let held = decoders.acquire(c).await;
        let gone = waiting(&decoders, a);
        tokio::task::yield_now().await;
        gone.abort();
        let _ = gone.await;
        drop(held);
        // The one permit is free again, or handed to the next part that asks.
        let next =
            tokio::time::timeout(std::time::Duration::from_secs(5), decoders.acquire(b)).await;
        assert!(next.is_ok(), "the permit came back");
        let queue = decoders.shared.lock();
        assert_eq!((queue.free, queue.waiting.len()), (0, 0));
    }
}
