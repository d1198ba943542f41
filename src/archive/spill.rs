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

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
            file: None,
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

/// A part being spilled while it is decoded.
pub(super) struct Spill {
    spiller: Spiller,
    /// Created at the first write.
    file: Option<Arc<File>>,
    /// Bytes the reservation covers.
    room: u64,
    written: u64,
    crc: crc32fast::Hasher,
    /// The room in the disk budget, held while the file may be read (by a reader made while
    /// the part was written, too, if writing it was given up).
    room_held: Arc<OwnedSemaphorePermit>,
}

impl Spill {
    /// Appends `bytes` (blocking I/O). `None`: the part is not spilled after all (no room
    /// left, or the disk failed) and must be read again from S3.
    pub(super) fn write(mut self, bytes: &[u8]) -> Option<Self> {
        self.written += bytes.len() as u64;
        if self.written > self.room {
            // The part is longer than its manifest said; its reader's checks judge it.
            return None;
        }
        let done = match &self.file {
            Some(file) => file.write_all_at(bytes, self.written - bytes.len() as u64),
            None => self.spiller.create().and_then(|file| {
                file.write_all_at(bytes, 0)?;
                self.file = Some(Arc::new(file));
                Ok(())
            }),
        };
        if let Err(e) = done {
            self.spiller.failed(&e);
            return None;
        }
        self.crc.update(bytes);
        Some(self)
    }

    /// Reads what has been written so far, while the part is still being written.
    pub(super) fn reader(&self) -> Option<SpillRead> {
        let file = self.file.clone()?;
        Some(SpillRead::start(file, &self.spiller, &self.room_held))
    }

    /// The part, all written.
    pub(super) fn seal(self) -> Option<Spilled> {
        Some(Spilled {
            file: self.file?,
            length: self.written,
            crc: self.crc.finalize(),
            spiller: self.spiller,
            room_held: self.room_held,
        })
    }
}

/// A part on local disk, ready to be read back.
pub(super) struct Spilled {
    file: Arc<File>,
    length: u64,
    /// CRC-32 of what was written.
    crc: u32,
    spiller: Spiller,
    room_held: Arc<OwnedSemaphorePermit>,
}

impl Spilled {
    /// Reads the part from its start.
    pub(super) fn read(&self) -> SpillRead {
        SpillRead::start(self.file.clone(), &self.spiller, &self.room_held)
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
    file: Arc<File>,
    spiller: Spiller,
    offset: u64,
    crc: crc32fast::Hasher,
    /// The file's room in the disk budget, given back when the file is closed.
    _room: Arc<OwnedSemaphorePermit>,
}

impl SpillRead {
    /// Reading `file` from its start, its `room` held meanwhile.
    fn start(file: Arc<File>, spiller: &Spiller, room: &Arc<OwnedSemaphorePermit>) -> Self {
        SpillRead {
            file,
            spiller: spiller.clone(),
            offset: 0,
            crc: crc32fast::Hasher::new(),
            _room: room.clone(),
        }
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
        let left = end.saturating_sub(self.offset);
        if left == 0 {
            return Ok(None);
        }
        let len = usize::try_from(left).map_or(READ, |left| left.min(READ));
        let (file, offset) = (self.file.clone(), self.offset);
        let read = tokio::task::spawn_blocking(move || {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spiller(mib: u32) -> (Spiller, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "spill-test-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        (Spiller::new(dir.to_str().unwrap(), mib), dir)
    }

    async fn read_all(spilled: &Spilled) -> Result<Vec<u8>, JobError> {
        let mut read = spilled.read();
        let mut all = Vec::new();
        while let Some(chunk) = read.next_before(spilled.length()).await? {
            all.extend_from_slice(&chunk);
        }
        spilled.check(&read)?;
        Ok(all)
    }

    #[tokio::test]
    async fn a_part_reads_back_as_written_and_leaves_no_file() {
        let (spiller, dir) = spiller(2);
        let data: Vec<u8> = (0..600_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut spill = spiller.reserve(data.len() as u64).unwrap();
        for chunk in data.chunks(100_000) {
            spill = spill.write(chunk).unwrap();
        }
        let spilled = spill.seal().unwrap();
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "the file is unlinked"
        );
        assert_eq!(read_all(&spilled).await.unwrap(), data);
        std::fs::remove_dir(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_part_is_read_while_it_is_written_and_checked_at_its_end() {
        let (spiller, dir) = spiller(2);
        let data: Vec<u8> = (0..700_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let mut spill = spiller.reserve(data.len() as u64).unwrap();
        assert!(spill.reader().is_none(), "no file before the first write");
        spill = spill.write(&data[..300_000]).unwrap();
        let mut read = spill.reader().unwrap();
        let mut all = Vec::new();
        while let Some(chunk) = read.next_before(200_000).await.unwrap() {
            all.extend_from_slice(&chunk);
        }
        assert_eq!(read.offset(), 200_000);
        spill = spill.write(&data[300_000..]).unwrap();
        let spilled = spill.seal().unwrap();
        while let Some(chunk) = read.next_before(spilled.length()).await.unwrap() {
            all.extend_from_slice(&chunk);
        }
        spilled.check(&read).unwrap();
        assert!(all == data);
        // Stopping short of the end is not reading it all.
        let mut short = spilled.read();
        short.next_before(10).await.unwrap();
        assert!(spilled.check(&short).unwrap_err().is_transient());
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn a_file_given_up_half_way_keeps_its_room_while_it_is_read() {
        let (spiller, dir) = spiller(1);
        let spill = spiller.reserve(10).unwrap().write(&[1; 100]).unwrap();
        let read = spill.reader().unwrap();
        assert!(
            spill.write(&vec![0; MIB as usize]).is_none(),
            "past its room"
        );
        assert!(spiller.reserve(1).is_none(), "the file is still read");
        drop(read);
        assert!(spiller.reserve(MIB).is_some(), "given back");
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn the_disk_budget_is_shared_and_given_back() {
        let (spiller, dir) = spiller(2);
        let first = spiller.reserve(MIB + 1).unwrap();
        assert!(spiller.reserve(1).is_none(), "2 MiB are taken");
        drop(first);
        assert!(spiller.reserve(2 * MIB).is_some());
        assert!(
            Spiller::new("/", 0).reserve(1).is_none(),
            "0 MiB spills nothing"
        );
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn a_part_longer_than_its_room_or_a_missing_directory_is_not_spilled() {
        let (spiller, dir) = spiller(1);
        let spill = spiller.reserve(10).unwrap().write(&[0; 100]);
        assert!(spill.is_some(), "within the MiB reserved");
        assert!(spill.unwrap().write(&vec![0; MIB as usize]).is_none());
        let gone = Spiller::new(dir.join("missing").to_str().unwrap(), 1);
        assert!(gone.reserve(10).unwrap().write(b"x").is_none());
        std::fs::remove_dir(&dir).unwrap();
    }

    #[tokio::test]
    async fn bytes_changed_on_disk_fail_as_transient_and_turn_spilling_off() {
        let (spiller, dir) = spiller(1);
        let spilled = spiller
            .reserve(1000)
            .unwrap()
            .write(&[1; 1000])
            .unwrap()
            .seal()
            .unwrap();
        spilled.file.write_all_at(&[2], 500).unwrap();
        let e = read_all(&spilled).await.unwrap_err();
        assert!(e.is_transient() && e.to_string().contains("CRC-32"), "{e}");
        assert!(spiller.reserve(1).is_none(), "spilling is off");
        std::fs::remove_dir(&dir).unwrap();
    }
}
