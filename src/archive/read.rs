//! Reading a part of the upload bucket front to back, with ranged GETs in parallel when it is
//! large.
//!
//! One GET stream is limited by one connection's throughput (S3 serves each connection at a
//! fraction of what an instance can take in), so a part longer than `archive.range_size_mib`
//! is read as ranges of that size: the range being consumed streams, and the following ranges
//! are fetched whole at the same time, as far as the process's read-ahead memory
//! (`archive.read_ahead_mib`, shared by every part being read) allows. A range that finds no
//! memory is simply streamed when its turn comes, so the bound is never exceeded and nothing
//! waits for memory. Every range after the first carries `If-Match` on the first one's ETag,
//! so all bytes come from one version of the object, and each range's length is checked.
//!
//! A part's length comes from the manifest (`meta.content_length`); a part without one is
//! read with one GET, and so is every part when `archive.range_size_mib` is 0, the default
//! (docs/ARCHITECTURE.md, "The archive formats", says why).

use std::collections::VecDeque;
use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::spill::{SpillRead, Spilled};
use super::stream_error;
use crate::aws::{AwsError, AwsResultExt};
use crate::error::JobError;

const MIB: u64 = 1024 * 1024;

/// What reads the parts of one upload bucket; cheap to clone.
#[derive(Clone, Debug)]
pub(super) struct Reader {
    s3: Client,
    bucket: String,
    /// Bytes per ranged GET; 0: one GET per part.
    range: u64,
    /// Read-ahead memory of the process, one permit per MiB.
    ahead: Arc<Semaphore>,
}

/// A fetched range, as the chunks it came in, and the read-ahead memory it holds.
type Fetched = (VecDeque<Bytes>, OwnedSemaphorePermit);

/// One part being read.
pub(super) struct PartRead {
    reader: Reader,
    key: String,
    etag: Option<String>,
    /// The part's length, when it is read by ranges.
    total: u64,
    /// First byte no GET has asked for yet.
    next: u64,
    /// The range being streamed, and how many of its bytes are still to come.
    current: Option<(ByteStream, Option<u64>)>,
    /// Ranges fetched ahead, in order, each starting where the one before ends.
    ahead: VecDeque<JoinHandle<Result<Fetched, JobError>>>,
    /// The fetched range being handed out: its chunks still to go, and its read-ahead memory,
    /// given back when the last chunk has gone.
    fetched: Option<Fetched>,
}

impl Drop for PartRead {
    fn drop(&mut self) {
        for fetch in &self.ahead {
            fetch.abort();
        }
    }
}

impl Reader {
    /// `range_mib` 0 reads every part with one GET; `read_ahead_mib` is the memory all parts
    /// being read may hold in ranges fetched ahead.
    pub(super) fn new(s3: Client, bucket: String, range_mib: u32, read_ahead_mib: u32) -> Self {
        Reader {
            s3,
            bucket,
            range: u64::from(range_mib) * MIB,
            ahead: Arc::new(Semaphore::new(read_ahead_mib as usize)),
        }
    }

    /// Starts reading `key`, of `length` bytes if the manifest says, and of the version whose
    /// ETag is `etag` if one is given.
    pub(super) async fn open(
        &self,
        key: &str,
        length: Option<u64>,
        etag: Option<String>,
    ) -> Result<PartRead, JobError> {
        let mut read = PartRead {
            reader: self.clone(),
            key: key.to_string(),
            etag,
            total: 0,
            next: 0,
            current: None,
            ahead: VecDeque::new(),
            fetched: None,
        };
        let ranged = length.filter(|&l| self.range > 0 && l > self.range);
        let get = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_if_match(read.etag.clone());
        let Some(length) = ranged else {
            let out = get.send().await.aws("s3", "GetObject")?;
            if read.etag.is_none() {
                read.etag = out.e_tag;
            }
            read.current = Some((out.body, None));
            return Ok(read);
        };
        let out = get
            .range(format!("bytes=0-{}", self.range - 1))
            .send()
            .await
            .aws("s3", "GetObject")?;
        if read.etag.is_none() {
            read.etag = out.e_tag;
        }
        match out.content_range.as_deref().and_then(range_total) {
            // The object's own length decides, whatever the manifest said; the reader's
            // caller checks the part's size against what it expects.
            Some(total) => {
                read.total = total;
                read.next = self.range.min(total);
                read.current = Some((out.body, Some(read.next)));
            }
            // A server that ignores Range sends the whole object.
            None => read.current = Some((out.body, None)),
        }
        tracing::debug!(key, length, total = read.total, "reading a part by ranges");
        read.fetch_ahead();
        Ok(read)
    }
}

/// Where a decoded part is read again from: memory (a part of one batch, kept), the copy
/// spilled to local disk (from where reading it while it was written stopped), or the bucket.
pub(super) enum Again<'a> {
    Memory(Option<Bytes>),
    Disk(SpillRead, &'a Spilled),
    S3(Box<PartRead>),
}

impl Again<'_> {
    /// The next bytes, `None` at the end, once a spilled copy is checked to be what was
    /// written.
    pub(super) async fn next(&mut self) -> Result<Option<Bytes>, JobError> {
        match self {
            Again::Memory(bytes) => Ok(bytes.take()),
            Again::Disk(read, spilled) => {
                let chunk = read.next_before(spilled.length()).await?;
                if chunk.is_none() {
                    spilled.check(read)?;
                }
                Ok(chunk)
            }
            Again::S3(read) => read.next().await,
        }
    }
}

/// The object's length in a `Content-Range: bytes a-b/total` header.
fn range_total(header: &str) -> Option<u64> {
    header.rsplit_once('/')?.1.trim().parse().ok()
}

impl PartRead {
    /// The ETag of the version being read.
    pub(super) fn etag(&self) -> Option<&String> {
        self.etag.as_ref()
    }

    /// The next bytes of the part, `None` at its end.
    pub(super) async fn next(&mut self) -> Result<Option<Bytes>, JobError> {
        loop {
            if let Some((chunks, _)) = &mut self.fetched {
                if let Some(chunk) = chunks.pop_front() {
                    return Ok(Some(chunk));
                }
                self.fetched = None;
                self.fetch_ahead();
            }
            if let Some((body, left)) = &mut self.current {
                match body
                    .try_next()
                    .await
                    .map_err(|e| stream_error("GetObject", e))?
                {
                    Some(chunk) => {
                        if let Some(left) = left {
                            *left = left.checked_sub(chunk.len() as u64).ok_or_else(|| {
                                short(format!("a range of {} sent more", self.key))
                            })?;
                        }
                        self.fetch_ahead();
                        return Ok(Some(chunk));
                    }
                    None if left.is_some_and(|left| left > 0) => {
                        return Err(short(format!("a range of {} ended early", self.key)));
                    }
                    None => self.current = None,
                }
            }
            if let Some(fetch) = self.ahead.pop_front() {
                self.fetched = Some(fetch.await.map_err(|e| {
                    JobError::Archive(format!("reading {} ended: {e}", self.key))
                })??);
                self.fetch_ahead();
                continue;
            }
            if self.next >= self.total {
                return Ok(None);
            }
            // Nothing was fetched ahead: the next range streams.
            let (start, end) = self.take_range();
            let out = self.get_range(start, end).await?;
            self.current = Some((out, Some(end - start)));
        }
    }

    /// Starts fetching the following ranges while read-ahead memory allows.
    fn fetch_ahead(&mut self) {
        let mib = u32::try_from(self.reader.range / MIB).unwrap_or(u32::MAX);
        while self.next < self.total {
            let Ok(permit) = self.reader.ahead.clone().try_acquire_many_owned(mib) else {
                return;
            };
            let (start, end) = self.take_range();
            let range = self.range_request(start, end);
            let key = self.key.clone();
            self.ahead.push_back(tokio::spawn(async move {
                let mut body = range.send().await.aws("s3", "GetObject")?.body;
                let (mut chunks, mut len) = (VecDeque::new(), 0u64);
                while let Some(chunk) = body
                    .try_next()
                    .await
                    .map_err(|e| stream_error("GetObject", e))?
                {
                    len += chunk.len() as u64;
                    chunks.push_back(chunk);
                }
                if len != end - start {
                    return Err(short(format!(
                        "a range of {key} was {len} bytes, not {}",
                        end - start
                    )));
                }
                Ok((chunks, permit))
            }));
        }
    }

    /// The next range no GET has asked for: [start, end).
    fn take_range(&mut self) -> (u64, u64) {
        let start = self.next;
        self.next = (start + self.reader.range).min(self.total);
        (start, self.next)
    }

    fn range_request(
        &self,
        start: u64,
        end: u64,
    ) -> aws_sdk_s3::operation::get_object::builders::GetObjectFluentBuilder {
        self.reader
            .s3
            .get_object()
            .bucket(&self.reader.bucket)
            .key(&self.key)
            .set_if_match(self.etag.clone())
            .range(format!("bytes={start}-{}", end - 1))
    }

    async fn get_range(&self, start: u64, end: u64) -> Result<ByteStream, JobError> {
        Ok(self
            .range_request(start, end)
            .send()
            .await
            .aws("s3", "GetObject")?
            .body)
    }
}

/// A range that did not hold what was asked: an answer gone wrong on the way, retried.
fn short(why: String) -> JobError {
    AwsError::unanswered("s3", "GetObject", why).into()
}

#[cfg(test)]
mod tests {
    use super::range_total;

    #[test]
    fn the_total_is_read_from_content_range() {
        assert_eq!(range_total("bytes 0-8388607/20000000"), Some(20_000_000));
        assert_eq!(range_total("bytes 0-9/10"), Some(10));
        assert_eq!(range_total("bytes 0-9/*"), None);
        assert_eq!(range_total("nonsense"), None);
    }
}
