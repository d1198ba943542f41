//! Streaming the unloaded parts from the upload bucket into zip entries.
//!
//! Passed through (`parts`) or joined (`single`), a part is read twice (each read by ranges in
//! parallel when the part is large: `read.rs`): first decoded and verified, which records how
//! its bytes become the entry's DEFLATE bytes ([`Edits`]), then read again and changed without
//! decoding while the entry is written (`ahead.rs`; in `single` the second read follows the
//! first while the part is still being decoded). The second read is of the copy kept on local
//! disk during the first (`spill.rs`) when there was room, and of S3 otherwise (with `If-Match`
//! on its ETag, so it is the same object). A part that fits in one batch (256 KiB) is kept in
//! memory from the first read instead. The decoding of several parts runs at once on the
//! blocking pool, at most `archive.decode_threads` parts in the whole process, ahead of the
//! writing, which takes the parts in manifest order. Memory per part being decoded is up to
//! four batches of input (the one being decoded, [`QUEUED`] read ahead, one being read: 1 MiB)
//! plus the decoder's buffers (about 1 MiB); a part is never held whole unless it is one batch. A single large part is decoded by one thread; many parts use every core.
//!
//! A part of several gzip members in `parts` is read a third time, joined member by member.
//! Recompression, the fallback, is in `recompress.rs`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use super::ahead::{Ahead, Settled};
use super::codec::Codec;
use super::decoders::{Decoders, Permit};
use super::deflate::PassThrough;
use super::edits::{Edit, Edits};
use super::join::{self, Joiner};
use super::limits::Budget;
use super::manifest::ManifestEntry;
use super::read::{PartRead, Reader};
use super::sink::MultipartSink;
use super::spill::{Spill, Spilled, Spiller};
use super::zip::ZipWriter;
use super::{Archiver, BuildError, Plan};
use crate::error::JobError;

/// Input handed to a decoder at once (S3's chunks are much smaller).
const BATCH: usize = 256 * 1024;
/// A batch this small (a part of a few rows) that is not being spilled is decoded on the
/// async thread: it takes less than the hand-over to the blocking pool and back.
const INLINE: usize = 16 * 1024;

/// What decoding a part found.
pub(super) struct Planned {
    pub(super) key: String,
    pub(super) etag: Option<String>,
    pub(super) edits: Edits,
    pub(super) crc: u32,
    /// Data bytes.
    pub(super) size: u64,
    /// DEFLATE bytes the edits give.
    pub(super) compressed: u64,
    /// The part's bytes.
    pub(super) length: u64,
    /// The whole part, when it came in one batch: it is not read again.
    pub(super) bytes: Option<Bytes>,
    /// The part on local disk, when there was room: S3 is not read again.
    pub(super) spilled: Option<Spilled>,
}

/// A part of the upload bucket to decode, with the export's budget and the process's decoder
/// permits.
#[derive(Clone)]
pub(super) struct Part {
    reader: Reader,
    spiller: Spiller,
    part: PartRef,
    budget: Budget,
    decoders: Decoders,
    /// Its place in line for a decoder permit.
    ticket: u64,
    /// Where it tells the writer what it may copy before the decoding ends.
    settled: Arc<watch::Sender<Option<Settled>>>,
}

impl Part {
    /// `part` of an archive of `archiver` within `budget`, in line for a decoder permit after
    /// the parts made before it.
    pub(super) fn new(
        archiver: &Archiver,
        part: PartRef,
        budget: &Budget,
        settled: watch::Sender<Option<Settled>>,
    ) -> Part {
        Part {
            reader: archiver.reader.clone(),
            spiller: archiver.spiller.clone(),
            part,
            budget: budget.clone(),
            decoders: archiver.decoders.clone(),
            ticket: archiver.decoders.ticket(),
            settled: Arc::new(settled),
        }
    }
}

/// A part the manifest lists: its key and, when the manifest says, its length.
#[derive(Clone, Debug)]
pub(super) struct PartRef {
    pub(super) key: String,
    pub(super) length: Option<u64>,
}

/// Batches of a part read while its decoder works on the one before: the decoder goes on to the
/// next one without waiting for the async thread, which is busy with every part's reads and
/// the archive's writes and, on a machine with few cores, often waits its turn behind a
/// decoder.
const QUEUED: usize = 2;

/// Decodes one part on the blocking pool and spills it to local disk as it goes when there is
/// room, telling the writer how much of it is settled ([`Settled`]). A part of one batch is
/// decoded at once and kept in memory. A longer one is read on the async thread into a queue of
/// [`QUEUED`] batches, which one blocking thread decodes in turn for the whole part. The part
/// keeps its decoder permit from one batch to the next while its input is ready, and gives it
/// up only to wait for the input: parts decoding at once then finish in the order they started
/// (the writer's order) instead of all together, and the writer, copying the first part's
/// settled bytes as they come, starts the upload with the decoding.
async fn plan<C: Codec>(part: Part, codec: C) -> Result<Planned, BuildError> {
    let Part {
        reader,
        spiller,
        part: PartRef { key, length },
        budget,
        decoders,
        ticket,
        settled,
    } = part;
    // A part of one batch is kept in memory; one of unknown length is read again.
    let spill = length
        .filter(|&l| l > BATCH as u64)
        .and_then(|l| spiller.reserve(l));
    let mut body = reader.open(&key, length, None).await?;
    let etag = body.etag().cloned();
    let mut decoding = Decoding {
        key,
        codec,
        raw: Vec::new(),
        spill,
        read: 0,
        published: 0,
        budget,
        settled,
    };
    let (first, more) = next_batch(&mut body).await?;
    let bytes = if more {
        let name = decoding.key.clone();
        let (queue, mut batches) = tokio::sync::mpsc::channel(QUEUED);
        let decoder = tokio::runtime::Handle::current();
        let decode = tokio::task::spawn_blocking(move || {
            let mut held: Option<Permit> = None;
            let mut batch = Some(first);
            while let Some(input) = batch.take().map(Bytes::from) {
                // Kept unless a part started before this one waits for it.
                let permit = match held.take().filter(|p| !p.owed()) {
                    Some(permit) => permit,
                    None => decoder.block_on(decoders.acquire(ticket)),
                };
                decoding.batch(input)?;
                held = Some(permit);
                batch = match batches.try_recv() {
                    Ok(next) => Some(next),
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => None,
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                        held = None;
                        batches.blocking_recv()
                    }
                };
            }
            Ok::<_, BuildError>(decoding)
        });
        let read = async move {
            loop {
                let (batch, more) = next_batch(&mut body).await?;
                if !batch.is_empty() && queue.send(batch).await.is_err() {
                    // The decoder stopped: its own error says why.
                    return Ok(());
                }
                if !more {
                    return Ok::<_, BuildError>(());
                }
            }
        };
        let (read, decoded) = tokio::join!(read, decode);
        // A read that failed ended the queue early: its error, not the truncation, is the cause.
        read?;
        decoding =
            decoded.map_err(|e| JobError::Archive(format!("decoding {name} ended: {e}")))??;
        None
    } else {
        let name = decoding.key.clone();
        let permit = decoders.acquire(ticket).await;
        let inline = first.len() <= INLINE && decoding.spill.is_none();
        let first = Bytes::from(first);
        let (d, fed) = if inline {
            let fed = decoding.batch(first.clone());
            (decoding, fed)
        } else {
            let batch = first.clone();
            tokio::task::spawn_blocking(move || {
                let fed = decoding.batch(batch);
                (decoding, fed)
            })
            .await
            .map_err(|e| JobError::Archive(format!("decoding {name} ended: {e}")))?
        };
        drop(permit);
        decoding = d;
        fed?;
        Some(first)
    };
    let Decoding {
        key,
        codec,
        mut raw,
        spill,
        read,
        ..
    } = decoding;
    let (edits, crc, size, compressed) = codec.done(&key, &mut raw)?;
    Ok(Planned {
        etag,
        edits,
        crc,
        size,
        compressed,
        length: read,
        spilled: spill.filter(|_| bytes.is_none()).map(Spill::seal),
        bytes,
        key,
    })
}

/// The next batch of a part's body (up to [`BATCH`] bytes) and whether more follows.
async fn next_batch(body: &mut PartRead) -> Result<(Vec<u8>, bool), BuildError> {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(chunk) = body.next().await? {
        batch.extend_from_slice(&chunk);
        if batch.len() >= BATCH {
            return Ok((batch, true));
        }
    }
    Ok((batch, false))
}

/// A part being decoded: its codec, its spill file and what the writer has been told.
struct Decoding<C> {
    key: String,
    codec: C,
    raw: Vec<u8>,
    spill: Option<Spill>,
    /// The part's bytes decoded so far.
    read: u64,
    /// How much of the part the writer has been told is settled.
    published: u64,
    budget: Budget,
    settled: Arc<watch::Sender<Option<Settled>>>,
}

impl<C: Codec> Decoding<C> {
    /// Decodes the next batch of the part, spills it, checks the export's budget and tells the
    /// writer what has become final.
    fn batch(&mut self, batch: Bytes) -> Result<(), BuildError> {
        self.read += batch.len() as u64;
        let fed = self.codec.feed(&self.key, &batch, &mut self.raw);
        self.raw.clear();
        // A part that fails to decode is not read again: nothing to keep.
        self.spill = self
            .spill
            .take()
            .filter(|_| fed.is_ok())
            .and_then(|s| s.write(batch));
        fed?;
        self.budget
            .check(&self.key, self.read, self.codec.inflated())?;
        if let Some((upto, edits)) = self.codec.early()
            && upto > self.published
            && let Some(from) = self.spill.as_ref().map(Spill::reader)
        {
            self.published = upto;
            let edits = edits.clone();
            self.settled
                .send_replace(Some(Settled { upto, edits, from }));
        }
        Ok(())
    }
}

/// How a part is decoded for its layout.
pub(super) type Planner = fn(Part) -> Planning;
pub(super) type Planning = Pin<Box<dyn Future<Output = Result<Planned, BuildError>> + Send>>;

/// A part to be joined into the `single` entry.
fn joined(part: Part) -> Planning {
    Box::pin(plan(part, Joiner::recording()))
}

/// A part to be an entry of its own: its DEFLATE body passed through, or, when it has several
/// gzip members, read again and joined member by member and closed with a final block —
/// only that part is read again, nothing is recompressed.
fn passed(part: Part) -> Planning {
    Box::pin(async move {
        let first = plan(part.clone(), PassThrough::default()).await;
        let Err(BuildError::Fallback(reason)) = first else {
            return first;
        };
        tracing::debug!(%reason, "joining the part's gzip members");
        let mut planned = plan(part, Joiner::recording()).await?;
        planned.edits.push(Edit::Insert {
            at: planned.length,
            bytes: join::LAST_BLOCK.to_vec(),
        });
        planned.compressed += join::LAST_BLOCK.len() as u64;
        Ok(planned)
    })
}

impl Archiver {
    /// The manifest's parts, each checked to be under the attempt's prefix.
    pub(super) fn keys(
        &self,
        plan: Plan<'_>,
        entries: &[ManifestEntry],
    ) -> Result<Vec<PartRef>, JobError> {
        entries
            .iter()
            .map(|e| {
                Ok(PartRef {
                    key: self.part_key(&e.url, plan.unload_prefix)?.to_string(),
                    length: e.meta.as_ref().and_then(|m| m.content_length),
                })
            })
            .collect()
    }

    /// One entry per part, each part's DEFLATE body passed through.
    pub(super) async fn pass_through_parts(
        &self,
        plan: Plan<'_>,
        entries: &[ManifestEntry],
        zip: &mut ZipWriter,
        out: &mut Vec<u8>,
        sink: &mut MultipartSink,
        budget: &mut Budget,
    ) -> Result<(), BuildError> {
        let keys = self.keys(plan, entries)?;
        let count = keys.len();
        let mut ahead = Ahead::new(self, keys, budget, passed);
        for _ in 0..count {
            let key = ahead.next_key().unwrap_or_default();
            let base = key.rsplit('/').next().unwrap_or(key);
            let base = base.strip_suffix(".gz").unwrap_or(base);
            zip.start_entry(&format!("{base}.{}", plan.format.extension()), out);
            let planned = self.write_part(&mut ahead, zip, out, sink, budget).await?;
            zip.finish_entry(planned.crc, planned.compressed, planned.size, out);
        }
        Ok(())
    }

    /// The `single` entry: `header` as stored blocks, then every part's DEFLATE data joined,
    /// then the final block. Returns (crc, compressed size, size).
    #[expect(
        clippy::too_many_arguments,
        reason = "the entry's state is threaded through the parts as the other layouts do"
    )]
    pub(super) async fn join_parts(
        &self,
        plan: Plan<'_>,
        header: &[u8],
        entries: &[ManifestEntry],
        zip: &mut ZipWriter,
        out: &mut Vec<u8>,
        sink: &mut MultipartSink,
        budget: &mut Budget,
    ) -> Result<(u32, u64, u64), BuildError> {
        let mut raw = Vec::new();
        let mut crc = crc32fast::Hasher::new();
        crc.update(header);
        let mut compressed = join::stored(header, &mut raw);
        zip.write(&raw, out);
        raw.clear();
        let mut size = header.len() as u64;
        let keys = self.keys(plan, entries)?;
        let count = keys.len();
        let mut ahead = Ahead::new(self, keys, budget, joined);
        for _ in 0..count {
            let planned = self.write_part(&mut ahead, zip, out, sink, budget).await?;
            crc.combine(&crc32fast::Hasher::new_with_initial_len(
                planned.crc,
                planned.size,
            ));
            size += planned.size;
            compressed += planned.compressed;
        }
        raw.extend_from_slice(&join::LAST_BLOCK);
        compressed += join::LAST_BLOCK.len() as u64;
        zip.write(&raw, out);
        Ok((crc.finalize(), compressed, size))
    }
}
