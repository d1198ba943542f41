//! Parquet parts as stored entries (method 0). Parquet compresses inside (Snappy per row
//! group) and two Parquet files cannot be concatenated into one, so each part becomes an entry
//! of its own, its bytes copied as Redshift wrote them and its CRC-32 computed on the way; the
//! CRC and size go in the data descriptor, as for every entry. The part is read once (by
//! ranges in parallel when it is large: `read.rs`); while one part streams, the next part's
//! GET is already under way. Each part is checked to be a
//! Parquet file — the `PAR1` magic at both ends and a footer length that fits — so a damaged
//! or foreign object fails the export instead of being shipped.

use tokio::task::JoinHandle;

use super::limits::Budget;
use super::manifest::ManifestEntry;
use super::parts::PartRef;
use super::read::PartRead;
use super::sink::MultipartSink;
use super::zip::ZipWriter;
use super::{Archiver, BuildError, Plan, corrupt};
use crate::error::JobError;

const MAGIC: &[u8; 4] = b"PAR1";

/// The smallest Parquet file: magic, footer length, magic (an empty footer is not valid
/// either, but that is the reader's business).
const MIN_PARQUET: u64 = 12;

/// The entry name of a part: its file name, which Redshift ends with `.parquet`.
pub(super) fn entry_name(key: &str) -> String {
    let base = key.rsplit('/').next().unwrap_or(key);
    if base.ends_with(".parquet") {
        base.to_string()
    } else {
        format!("{base}.parquet")
    }
}

/// The first and last bytes of a part, to check it is a Parquet file.
#[derive(Default)]
struct Ends {
    head: Vec<u8>,
    tail: [u8; 8],
    size: u64,
}

impl Ends {
    fn feed(&mut self, chunk: &[u8]) {
        if self.head.len() < MAGIC.len() {
            let take = (MAGIC.len() - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        let n = self.tail.len();
        if chunk.len() >= n {
            self.tail.copy_from_slice(&chunk[chunk.len() - n..]);
        } else {
            self.tail.copy_within(chunk.len().., 0);
            self.tail[n - chunk.len()..].copy_from_slice(chunk);
        }
        self.size += chunk.len() as u64;
    }

    /// Why the bytes are not a Parquet file, if they are not.
    fn check(&self) -> Result<(), String> {
        if self.size < MIN_PARQUET {
            return Err(format!(
                "is {} bytes, too short for a Parquet file",
                self.size
            ));
        }
        if self.head != MAGIC || &self.tail[4..] != MAGIC {
            return Err("is not a Parquet file (no PAR1 magic at both ends)".into());
        }
        let footer = u64::from(u32::from_le_bytes([
            self.tail[0],
            self.tail[1],
            self.tail[2],
            self.tail[3],
        ]));
        if footer + MIN_PARQUET > self.size {
            return Err(format!(
                "has a footer of {footer} bytes, longer than the file ({} bytes)",
                self.size
            ));
        }
        Ok(())
    }
}

impl Archiver {
    /// The GET of a part, started now and awaited when its turn comes.
    fn prefetch(&self, part: Option<&PartRef>) -> Option<JoinHandle<Result<PartRead, JobError>>> {
        let part = part?.clone();
        let reader = self.reader.clone();
        Some(tokio::spawn(async move {
            reader.open(&part.key, part.length, None).await
        }))
    }

    /// One stored entry per part, in manifest order.
    pub(super) async fn store_parts(
        &self,
        plan: Plan<'_>,
        entries: &[ManifestEntry],
        zip: &mut ZipWriter,
        out: &mut Vec<u8>,
        sink: &mut MultipartSink,
        budget: &mut Budget,
    ) -> Result<(), BuildError> {
        let keys = self.keys(plan, entries)?;
        let mut next = self.prefetch(keys.first());
        for (i, part) in keys.iter().enumerate() {
            let key = &part.key;
            let body = match next.take() {
                Some(get) => get
                    .await
                    .map_err(|e| JobError::Archive(format!("reading {key} ended: {e}")))??,
                None => self.reader.open(key, part.length, None).await?,
            };
            next = self.prefetch(keys.get(i + 1));
            let stored = self.store(key, body, zip, out, sink, budget).await;
            if stored.is_err()
                && let Some(get) = next.take()
            {
                get.abort();
            }
            stored?;
        }
        Ok(())
    }

    /// Copies one part into a stored entry.
    async fn store(
        &self,
        key: &str,
        mut body: PartRead,
        zip: &mut ZipWriter,
        out: &mut Vec<u8>,
        sink: &mut MultipartSink,
        budget: &mut Budget,
    ) -> Result<(), BuildError> {
        zip.start_stored(&entry_name(key), out);
        let mut crc = crc32fast::Hasher::new();
        let mut ends = Ends::default();
        while let Some(chunk) = body.next().await? {
            crc.update(&chunk);
            ends.feed(&chunk);
            // Stored data is its own size: only the export's total is capped.
            budget.check(key, ends.size, ends.size)?;
            zip.write(&chunk, out);
            sink.write(out).await?;
        }
        ends.check().map_err(|why| corrupt(key, why))?;
        budget.add(ends.size);
        zip.finish_entry(crc.finalize(), ends.size, ends.size, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(chunks: &[&[u8]]) -> Ends {
        let mut e = Ends::default();
        for c in chunks {
            e.feed(c);
        }
        e
    }

    #[test]
    fn parquet_ends_are_checked_across_chunks() {
        let mut file = b"PAR1".to_vec();
        file.extend_from_slice(&[7; 20]);
        file.extend_from_slice(&10u32.to_le_bytes());
        file.extend_from_slice(b"PAR1");
        // Every split into chunks, down to single bytes, sees the same ends.
        for size in 1..file.len() {
            let chunks: Vec<&[u8]> = file.chunks(size).collect();
            assert_eq!(ends(&chunks).check(), Ok(()), "chunks of {size}");
        }
        assert_eq!(ends(&[&file]).size, file.len() as u64);

        let mut long_footer = file.clone();
        let at = long_footer.len() - 8;
        long_footer[at..at + 4].copy_from_slice(&100u32.to_le_bytes());
        assert!(
            ends(&[&long_footer])
                .check()
                .unwrap_err()
                .contains("footer")
        );
        let mut gzip = file.clone();
        gzip[..2].copy_from_slice(&[0x1f, 0x8b]);
        assert!(ends(&[&gzip]).check().unwrap_err().contains("magic"));
        assert!(
            ends(&[b"PAR1PAR1"])
                .check()
                .unwrap_err()
                .contains("too short")
        );
        assert!(ends(&[]).check().is_err());
    }

    #[test]
    fn entry_names_are_the_file_names() {
        assert_eq!(
            entry_name("u/r/1/0000_part_00.parquet"),
            "0000_part_00.parquet"
        );
        assert_eq!(entry_name("u/r/1/000"), "000.parquet");
    }
}
