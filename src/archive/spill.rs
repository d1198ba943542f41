//! A part's gzip bytes kept on local disk while the part is decoded, so that writing it into
//! the archive reads the disk instead of the upload bucket a second time.
//!
//! Each spilled part is one file in `archive.spill_dir`, created with a name no other process
//! uses and unlinked at once: only the open descriptor keeps it, so the disk is given back when
//! the part has been written (or its export failed), and a killed process leaves nothing
//! behind. The disk all parts may hold at once is `archive.spill_mib`, shared by every export of
//! the process; a part is spilled only when the manifest gives its length and that much room
//! is free, and a part that cannot be spilled (no room, no directory, a write that fails) is
//! read from S3 again, as with `spill_mib = 0`. Spilling only saves a GET; it never decides
//! whether an export succeeds, except when a spilled part cannot be read back as it was
//! written (its CRC-32 is checked): then the attempt fails as transient ([`JobError::Spill`])
//! and spilling stays off in this process, so the retry reads S3.
//!
//! The part the writer copies while it is decoded ([`SpillRead::follow`]) goes through a
//! window in memory first ([`WINDOW`]): what the writer reads from there in time never reaches
//! the file, and only what falls out of the window before it is read is written.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::JobError;

const MIB: u64 = 1024 * 1024;

/// Bytes read back from a spill file at a time.
const READ: usize = 256 * 1024;

/// Where and how much the parts of this process may spill; cheap to clone.
#[derive(Clone, Debug)]
pub(super) struct Spiller {
    dir: PathBuf,
    /// Disk all spilled parts may hold, one permit per MiB.
    room: Arc<Semaphore>,
    /// Set when a spilled part could not be read back: nothing spills after that.
    off: Arc<AtomicBool>,
    /// Set once a failure to create or write a spill file has been logged as a warning.
    warned: Arc<AtomicBool>,
    /// Numbers the files of this process.
    files: Arc<AtomicU64>,
}

impl Spiller {
    /// `mib` 0 spills nothing.
    pub(super) fn new(dir: &str, mib: u32) -> Self {
        Spiller {
            dir: PathBuf::from(dir),
            room: Arc::new(Semaphore::new(mib as usize)),
            off: Arc::new(AtomicBool::new(mib == 0)),
            warned: Arc::new(AtomicBool::new(false)),
            files: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Room for a part of `length` bytes, when spilling is on and the disk budget has it.
    pub(super) fn reserve(&self, length: u64) -> Option<Spill> {
        if self.off.load(Ordering::Relaxed) {
            return None;
        }
        let mib = u32::try_from(length.div_ceil(MIB)).ok()?;
        let permit = self.room.clone().try_acquire_many_owned(mib).ok()?;
        Some(Spill {
            spiller: self.clone(),
            shared: Arc::new(Shared {
                file: OnceLock::new(),
                held: Mutex::new(Held {
                    batches: VecDeque::new(),
                    len: 0,
                    following: false,
                    read_to: 0,
                }),
            }),
            room: u64::from(mib) * MIB,
            written: 0,
            crc: crc32fast::Hasher::new(),
            room_held: Arc::new(permit),
        })
    }

    /// A new spill file, already unlinked.
    fn create(&self) -> std::io::Result<File> {
        let n = self.files.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!(
            ".redshift-export-worker-{}-{n}.spill",
            std::process::id()
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        std::fs::remove_file(&path)?;
        Ok(file)
    }

    /// A spill file that could not be created or written: the part is read again instead.
    fn failed(&self, e: &std::io::Error) {
        if self.warned.swap(true, Ordering::Relaxed) {
            tracing::debug!(error = %e, "a part could not be spilled; it is read from S3 again");
        } else {
            tracing::warn!(
                error = %e,
                dir = %self.dir.display(),
                "a part could not be spilled to local disk (archive.spill_dir); parts that \
                 cannot be are read from S3 twice (logged once)"
            );
        }
    }
}

/// Bytes of the part the writer is copying while it is decoded that are kept in memory
/// rather than written to disk: the writer, a little behind the decoding, takes them from
/// there, and only what falls out of this window before it does goes to the file.
const WINDOW: usize = 512 * 1024;

/// A part's bytes not on disk, shared by its spill and its readers.
struct Held {
    /// Bytes fed but not written to the file, oldest first, each at its offset in the part.
    batches: VecDeque<(u64, Bytes)>,
    /// Their total length.
    len: usize,
    /// Set by the reader that copies the part while it is decoded ([`SpillRead::follow`]):
    /// from then on bytes go through the window.
    following: bool,
    /// Where that reader has read to: bytes before it are never read again, so they leave the
    /// window without being written.
    read_to: u64,
}

/// The part's file, created at its first write, and its bytes kept in memory.
struct Shared {
    file: OnceLock<File>,
    held: Mutex<Held>,
}

impl Shared {
    /// Where the bytes on disk end, of those before `fed`: the window's bytes follow them.
    /// Bytes the follower read from the window (before its `read_to`) may never have been
    /// written.
    fn disk_end(held: &Held, fed: u64) -> u64 {
        held.batches.front().map_or(fed, |(at, _)| *at)
    }
}

/// A part being spilled while it is decoded.
pub(super) struct Spill {
    spiller: Spiller,
    shared: Arc<Shared>,
    /// Bytes the reservation covers.
    room: u64,
    written: u64,
    crc: crc32fast::Hasher,
    /// The room in the disk budget, held while the file may be read (by a reader made while
    /// the part was written, too, if writing it was given up).
    room_held: Arc<OwnedSemaphorePermit>,
}

impl Spill {
    /// Appends `bytes`: to the window when the writer follows the part, else (and what the
    /// window sheds) to the file (blocking I/O, never under the lock the writer's reads take).
    /// `None`: the part is not spilled after all (no room left, or the disk failed) and must
    /// be read again from S3; what was fed before stays readable.
    pub(super) fn write(mut self, bytes: Bytes) -> Option<Self> {
        let at = self.written;
        self.written += bytes.len() as u64;
        if self.written > self.room {
            // The part is longer than its manifest said; its reader's checks judge it.
            return None;
        }
        self.crc.update(&bytes);
        let done = if self.keep(at, &bytes) {
            self.shed()
        } else {
            self.to_file(&bytes, at)
        };
        if let Err(e) = done {
            self.spiller.failed(&e);
            return None;
        }
        Some(self)
    }

    /// Puts `bytes` in the window, when the writer follows the part.
    fn keep(&self, at: u64, bytes: &Bytes) -> bool {
        let mut held = self.shared.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.following {
            held.len += bytes.len();
            held.batches.push_back((at, bytes.clone()));
        }
        held.following
    }

    /// Writes what the window holds beyond [`WINDOW`] to the file, except what its reader has
    /// read already, and only then lets it go: until it is on disk the reader finds it in
    /// memory, and a write that fails leaves it there.
    fn shed(&self) -> std::io::Result<()> {
        loop {
            let (at, read, unread) = {
                let held = self.shared.held.lock().unwrap_or_else(|e| e.into_inner());
                let Some((at, bytes)) = held.batches.front().filter(|_| held.len > WINDOW) else {
                    return Ok(());
                };
                let read = held.read_to.saturating_sub(*at).min(bytes.len() as u64);
                let unread = bytes.slice(usize::try_from(read).unwrap_or(bytes.len())..);
                (*at, read, unread)
            };
            if !unread.is_empty() {
                self.to_file(&unread, at + read)?;
            }
            let mut held = self.shared.held.lock().unwrap_or_else(|e| e.into_inner());
            if held.batches.front().is_some_and(|(front, _)| *front == at)
                && let Some((_, bytes)) = held.batches.pop_front()
            {
                held.len -= bytes.len();
            }
        }
    }

    fn to_file(&self, bytes: &[u8], at: u64) -> std::io::Result<()> {
        let file = match self.shared.file.get() {
            Some(file) => file,
            None => {
                let file = self.spiller.create()?;
                self.shared.file.get_or_init(|| file)
            }
        };
        file.write_all_at(bytes, at)
    }

    /// Reads what has been written so far, while the part is still being written.
    pub(super) fn reader(&self) -> SpillRead {
        SpillRead::start(&self.shared, &self.spiller, &self.room_held)
    }

    /// The part, all written.
    pub(super) fn seal(self) -> Spilled {
        Spilled {
            shared: self.shared,
            length: self.written,
            crc: self.crc.finalize(),
            spiller: self.spiller,
            room_held: self.room_held,
        }
    }
}

/// A part on local disk (and, the last of it, perhaps in the window), ready to be read back.
pub(super) struct Spilled {
    shared: Arc<Shared>,
    length: u64,
    /// CRC-32 of what was written.
    crc: u32,
    spiller: Spiller,
    room_held: Arc<OwnedSemaphorePermit>,
}

impl Spilled {
    /// Reads the part from its start.
    pub(super) fn read(&self) -> SpillRead {
        SpillRead::start(&self.shared, &self.spiller, &self.room_held)
    }

    /// The part's length.
    pub(super) fn length(&self) -> u64 {
        self.length
    }

    /// Checks that `read`, at the part's end, read back what was written.
    pub(super) fn check(&self, read: &SpillRead) -> Result<(), JobError> {
        let crc = read.crc();
        if read.offset != self.length || crc != self.crc {
            return Err(self.spiller.lost(format!(
                "{} bytes with CRC-32 {crc:08x} read back, {} with {:08x} written",
                read.offset, self.length, self.crc
            )));
        }
        Ok(())
    }
}

impl Spiller {
    /// A spilled part not read back as written: spilling goes off for good and the attempt
    /// fails as transient.
    pub(super) fn lost(&self, why: String) -> JobError {
        self.off.store(true, Ordering::Relaxed);
        tracing::error!(
            %why,
            dir = %self.dir.display(),
            "a spilled part could not be read back; spilling is off until the worker restarts"
        );
        JobError::Spill(why)
    }
}

/// Reading a spilled part back, front to back; the part may still be being written.
#[derive(Clone)]
pub(super) struct SpillRead {
    shared: Arc<Shared>,
    spiller: Spiller,
    offset: u64,
    crc: crc32fast::Hasher,
    /// Whether this is the reader the window is kept for.
    follower: bool,
    /// The file's room in the disk budget, given back when the file is closed.
    _room: Arc<OwnedSemaphorePermit>,
}

impl SpillRead {
    /// Reading `shared` from its start, its `room` held meanwhile.
    fn start(shared: &Arc<Shared>, spiller: &Spiller, room: &Arc<OwnedSemaphorePermit>) -> Self {
        SpillRead {
            shared: shared.clone(),
            spiller: spiller.clone(),
            offset: 0,
            crc: crc32fast::Hasher::new(),
            follower: false,
            _room: room.clone(),
        }
    }

    /// Makes this the one reader that copies the part while it is decoded: the bytes fed from
    /// now on are kept in memory for it (up to [`WINDOW`]) and those it has read are not
    /// written to disk. No other reader may read the part after it.
    pub(super) fn follow(&mut self) {
        let mut held = self.shared.held.lock().unwrap_or_else(|e| e.into_inner());
        held.following = true;
        held.read_to = self.offset;
        self.follower = true;
    }

    /// Bytes read so far.
    pub(super) fn offset(&self) -> u64 {
        self.offset
    }

    /// CRC-32 of the bytes read so far.
    pub(super) fn crc(&self) -> u32 {
        self.crc.clone().finalize()
    }

    /// The next bytes before offset `end` (written already), `None` there.
    pub(super) async fn next_before(&mut self, end: u64) -> Result<Option<Bytes>, JobError> {
        if self.offset >= end {
            return Ok(None);
        }
        let shared = self.shared.clone();
        let (offset, disk_end) = (self.offset, {
            let mut held = shared.held.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(bytes) = self.take_held(&mut held, end) {
                return Ok(Some(bytes));
            }
            if held.following && !self.follower && self.offset < held.read_to {
                return Err(JobError::Spill(
                    "a spilled part read behind the reader that follows it".into(),
                ));
            }
            Shared::disk_end(&held, end)
        });
        let left = disk_end.min(end).saturating_sub(offset);
        let len = usize::try_from(left).map_or(READ, |left| left.min(READ));
        let read = tokio::task::spawn_blocking(move || {
            let file = shared
                .file
                .get()
                .ok_or_else(|| std::io::Error::other("no spill file"))?;
            let mut buf = vec![0; len];
            file.read_exact_at(&mut buf, offset).map(|()| buf)
        })
        .await;
        let buf = match read {
            Ok(Ok(buf)) => buf,
            Ok(Err(e)) => return Err(self.spiller.lost(format!("reading at {offset}: {e}"))),
            Err(e) => return Err(JobError::Spill(format!("reading at {offset} ended: {e}"))),
        };
        self.offset += buf.len() as u64;
        self.crc.update(&buf);
        Ok(Some(Bytes::from(buf)))
    }

    /// The next bytes before `end` from the window, when they are there; the follower drops
    /// what it has read from it.
    fn take_held(&mut self, held: &mut Held, end: u64) -> Option<Bytes> {
        let at = self.offset;
        let (start, bytes) = held
            .batches
            .iter()
            .find(|(start, bytes)| *start <= at && at < start + bytes.len() as u64)?;
        let from = usize::try_from(at - start).ok()?;
        let to = usize::try_from(end.min(start + bytes.len() as u64) - start).ok()?;
        let chunk = bytes.slice(from..to);
        self.offset += chunk.len() as u64;
        self.crc.update(&chunk);
        if self.follower {
            held.read_to = self.offset;
            while let Some((start, bytes)) = held.batches.front()
                && start + bytes.len() as u64 <= held.read_to
            {
                held.len -= bytes.len();
                held.batches.pop_front();
            }
        }
        Some(chunk)
    }
}

#[cfg(test)]
#[path = "spill_tests.rs"]
mod tests;
