//! The parts being decoded ahead of the writer (at most `archive.decode_threads` + 2 at
//! once), and the writer copying each, in manifest order, into the entry: while a part is still
//! being decoded, the bytes its decoding has settled ([`Settled`]: decoded, spilled (to the
//! spill's window in memory or to local disk), and changed by the edits recorded so far
//! alone), then, once it has ended and been
//! verified, the rest. The upload of a `single` archive thus starts with the first part's
//! decoding rather than after it. Bytes copied early reach only the archive's multipart
//! upload, which is completed after every part has been verified and aborted otherwise.

use std::collections::VecDeque;

use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

use super::edits::{Apply, Edits};
use super::limits::Budget;
use super::parts::{Part, PartRef, Planned, Planner};
use super::read::Again;
use super::sink::MultipartSink;
use super::spill::{SpillRead, Spiller};
use super::zip::ZipWriter;
use super::{Archiver, BuildError};
use crate::aws::AwsError;
use crate::error::JobError;

/// Where a decoded part is read again from, as `archive_part_rereads_total{from}` counts
/// it: kept in memory (it came in one batch), spilled to local disk, or the upload bucket.
pub const REREAD_FROM: [&str; 3] = [FROM_MEMORY, FROM_SPILL, FROM_S3];
const FROM_MEMORY: &str = "memory";
const FROM_SPILL: &str = "spill";
const FROM_S3: &str = "s3";

/// What the writer may copy of a part still being decoded: its bytes before `upto`, spilled
/// (`from` reads them), are decoded and changed by `edits` alone. The part's CRC-32 and
/// trailer are checked only at its end, and the archive is completed only after that.
#[derive(Clone)]
pub(super) struct Settled {
    pub(super) upto: u64,
    pub(super) edits: Edits,
    pub(super) from: SpillRead,
}

/// A part being decoded, ahead of the writer or being written.
struct Decoding {
    task: AbortOnDropHandle<Result<Planned, BuildError>>,
    settled: watch::Receiver<Option<Settled>>,
    key: String,
}

/// Parts being decoded ahead of the writer, handed out in manifest order.
pub(super) struct Ahead {
    keys: std::vec::IntoIter<PartRef>,
    queue: VecDeque<Decoding>,
    planner: Planner,
}

impl Ahead {
    pub(super) fn new(
        archiver: &Archiver,
        keys: Vec<PartRef>,
        budget: &Budget,
        planner: Planner,
    ) -> Self {
        let mut ahead = Ahead {
            keys: keys.into_iter(),
            queue: VecDeque::new(),
            planner,
        };
        // Two more than can decode at once: one so that a permit never waits for a GET to
        // start, and one so that the decoders go on while the writer is behind (it copies a
        // part while the part after it is decoded; with one fewer, decoding paused whenever
        // the writer was slower than both decoders, as when the spill disk throttles writes).
        for _ in 0..=archiver.decode_threads + 1 {
            ahead.spawn(archiver, budget);
        }
        ahead
    }

    fn spawn(&mut self, archiver: &Archiver, budget: &Budget) {
        if let Some(part) = self.keys.next() {
            let (tell, settled) = watch::channel(None);
            let key = part.key.clone();
            let task = tokio::spawn((self.planner)(Part::new(archiver, part, budget, tell)));
            self.queue.push_back(Decoding {
                task: AbortOnDropHandle::new(task),
                settled,
                key,
            });
        }
    }

    /// The key of the part [`Ahead::next`] gives.
    pub(super) fn next_key(&self) -> Option<&str> {
        self.queue.front().map(|part| part.key.as_str())
    }

    /// The next part in manifest order, decoded or not yet.
    fn next(&mut self) -> Result<Decoding, JobError> {
        self.queue
            .pop_front()
            .ok_or_else(|| JobError::Archive("no part left to decode".into()))
    }
}

/// Reads the first `early.offset()` bytes of a part again, checked against those read from its
/// spill file before that was given up; returns what follows them in the last chunk.
async fn read_past(
    read: &mut Again<'_>,
    early: &SpillRead,
    spiller: &Spiller,
) -> Result<Bytes, JobError> {
    let (mut left, mut crc) = (early.offset(), crc32fast::Hasher::new());
    let mut rest = Bytes::new();
    while left > 0 {
        let Some(mut chunk) = read.next().await? else {
            break;
        };
        let n = usize::try_from(left).map_or(chunk.len(), |left| left.min(chunk.len()));
        rest = chunk.split_off(n);
        crc.update(&chunk);
        left -= n as u64;
    }
    if left > 0 || crc.finalize() != early.crc() {
        return Err(spiller.lost(format!(
            "the first {} bytes of a part read from its spill file differ from S3's",
            early.offset()
        )));
    }
    Ok(rest)
}

impl Archiver {
    /// Counts one second read of a part, from `from` (one of [`REREAD_FROM`]).
    fn count_reread(&self, from: &str) {
        if let Some(rereads) = &self.rereads {
            rereads.with_label_values(&[from]).inc();
        }
    }

    /// Writes the next part to the entry, changed as its decoding records: the bytes the
    /// decoding has settled as they come, then, once it has ended and the part is within the
    /// budget, the rest, read again (from local disk when it was spilled). Starts the decoding
    /// of a part further on when this one's has ended.
    pub(super) async fn write_part(
        &self,
        ahead: &mut Ahead,
        zip: &mut ZipWriter,
        out: &mut Vec<u8>,
        sink: &mut MultipartSink,
        budget: &mut Budget,
    ) -> Result<Planned, BuildError> {
        let Decoding {
            mut task,
            mut settled,
            ..
        } = ahead.next()?;
        let (mut apply, mut raw) = (Apply::default(), Vec::new());
        let mut early: Option<SpillRead> = None;
        let planned = loop {
            let now = tokio::select! {
                biased;
                planned = &mut task => break planned,
                changed = settled.changed() => match changed {
                    Ok(()) => settled.borrow_and_update().clone(),
                    Err(_) => break (&mut task).await,
                },
            };
            let Some(Settled { upto, edits, from }) = now else {
                continue;
            };
            let read = early.get_or_insert_with(|| {
                let mut read = from;
                read.follow();
                read
            });
            apply.update(&edits);
            while let Some(chunk) = read.next_before(upto).await? {
                apply.feed(&chunk, &mut raw);
                zip.write(&raw, out);
                raw.clear();
                sink.write(out).await?;
            }
        };
        let mut planned =
            planned.map_err(|e| JobError::Archive(format!("a part's decoding ended: {e}")))??;
        ahead.spawn(self, budget);
        budget.check(&planned.key, planned.length, planned.size)?;
        budget.add(planned.size);
        apply.update(&planned.edits);
        let mut body = if let Some(bytes) = planned.bytes.take() {
            self.count_reread(FROM_MEMORY);
            Again::Memory(Some(bytes))
        } else if let Some(spilled) = &planned.spilled {
            self.count_reread(FROM_SPILL);
            // Read on from where the copying stopped.
            Again::Disk(early.take().unwrap_or_else(|| spilled.read()), spilled)
        } else {
            self.count_reread(FROM_S3);
            let read = self
                .reader
                .open(&planned.key, Some(planned.length), planned.etag.clone());
            Again::S3(Box::new(read.await?))
        };
        if let Some(early) = &early {
            // The spill file was given up after some of it was copied.
            let rest = read_past(&mut body, early, &self.spiller).await?;
            apply.feed(&rest, &mut raw);
        }
        while let Some(chunk) = body.next().await? {
            apply.feed(&chunk, &mut raw);
            zip.write(&raw, out);
            raw.clear();
            sink.write(out).await?;
        }
        apply.finish(&mut raw);
        zip.write(&raw, out);
        if apply.offset() != planned.length {
            return Err(AwsError::unanswered(
                "s3",
                "GetObject",
                format!(
                    "{} was {} bytes when decoded and {} when read again",
                    planned.key,
                    planned.length,
                    apply.offset()
                ),
            )
            .into());
        }
        Ok(planned)
    }
}
