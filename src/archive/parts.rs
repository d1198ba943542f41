//! Streaming the unloaded parts from the upload bucket into zip entries: passed through,
//! joined, or inflated and compressed again. Each part is checked against the export's
//! [`Budget`] as it streams.

use aws_sdk_s3::primitives::ByteStream;

use super::deflate::{Gunzip, PassError, PassThrough, Recompressor};
use super::join::{self, JoinError, Joiner};
use super::limits::Budget;
use super::manifest::ManifestEntry;
use super::sink::MultipartSink;
use super::zip::ZipWriter;
use super::{Archiver, BuildError, Plan, archive_io, corrupt, stream_error};
use crate::aws::AwsResultExt;
use crate::error::JobError;

/// What turns a part's gzip bytes into an entry's DEFLATE bytes, verifying them.
trait Codec {
    fn feed(&mut self, part: &str, chunk: &[u8], raw: &mut Vec<u8>) -> Result<(), BuildError>;
    /// Data bytes decoded so far.
    fn inflated(&self) -> u64;
}

impl Codec for PassThrough {
    fn feed(&mut self, part: &str, chunk: &[u8], raw: &mut Vec<u8>) -> Result<(), BuildError> {
        match PassThrough::feed(self, chunk, raw) {
            Ok(()) => Ok(()),
            Err(PassError::MultiMember) => Err(BuildError::Fallback(format!(
                "{part} has several gzip members"
            ))),
            Err(e) => Err(corrupt(part, e).into()),
        }
    }

    fn inflated(&self) -> u64 {
        PassThrough::inflated(self)
    }
}

impl Codec for Joiner {
    fn feed(&mut self, part: &str, chunk: &[u8], raw: &mut Vec<u8>) -> Result<(), BuildError> {
        Joiner::feed(self, chunk, raw).map_err(|e| refused(part, e))
    }

    fn inflated(&self) -> u64 {
        Joiner::inflated(self)
    }
}

fn refused(part: &str, e: JoinError) -> BuildError {
    BuildError::Fallback(format!("{part}: {e}"))
}

impl Archiver {
    async fn get(&self, key: &str) -> Result<ByteStream, JobError> {
        let out = self
            .s3
            .get_object()
            .bucket(&self.upload_bucket)
            .key(key)
            .send()
            .await
            .aws("s3", "GetObject")?;
        Ok(out.body)
    }

    /// Streams one part through `codec` into the current entry.
    async fn stream(
        &self,
        part: &str,
        codec: &mut impl Codec,
        zip: &mut ZipWriter,
        out: &mut Vec<u8>,
        sink: &mut MultipartSink,
        budget: &Budget,
    ) -> Result<(), BuildError> {
        let mut raw = Vec::new();
        let mut compressed = 0u64;
        let mut body = self.get(part).await?;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| stream_error("GetObject", e))?
        {
            compressed += chunk.len() as u64;
            codec.feed(part, &chunk, &mut raw)?;
            budget.check(part, compressed, codec.inflated())?;
            zip.write(&raw, out);
            raw.clear();
            sink.write(out).await?;
        }
        Ok(())
    }

    /// One part as an entry of its own, its DEFLATE body copied.
    pub(super) async fn pass_through(
        &self,
        part: &str,
        zip: &mut ZipWriter,
        out: &mut Vec<u8>,
        sink: &mut MultipartSink,
        budget: &Budget,
    ) -> Result<(u32, u64, u64), BuildError> {
        let mut pass = PassThrough::default();
        self.stream(part, &mut pass, zip, out, sink, budget).await?;
        pass.finish().map_err(|e| corrupt(part, e).into())
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
        for entry in entries {
            let part = self.part_key(&entry.url, plan.unload_prefix)?;
            let mut joiner = Joiner::default();
            self.stream(part, &mut joiner, zip, out, sink, budget)
                .await?;
            let joined = joiner.finish(&mut raw).map_err(|e| refused(part, e))?;
            budget.add(joined.size);
            crc.combine(&joined.crc);
            size += joined.size;
            compressed += joined.compressed;
            zip.write(&raw, out);
            raw.clear();
        }
        raw.extend_from_slice(&join::LAST_BLOCK);
        compressed += join::LAST_BLOCK.len() as u64;
        zip.write(&raw, out);
        Ok((crc.finalize(), compressed, size))
    }

    /// One part as an entry of its own, inflated and compressed again.
    pub(super) async fn recompress(
        &self,
        part: &str,
        zip: &mut ZipWriter,
        out: &mut Vec<u8>,
        sink: &mut MultipartSink,
        budget: &mut Budget,
    ) -> Result<(u32, u64, u64), BuildError> {
        let mut rec = Recompressor::new(self.settings.compression_level);
        self.inflate_part(part, &mut rec, zip, out, sink, budget)
            .await?;
        let mut tail = Vec::new();
        let sizes = rec.finish_into(&mut tail).map_err(archive_io)?;
        zip.write(&tail, out);
        Ok(sizes)
    }

    /// Streams one gzip part (any number of members) into `rec`, passing the compressed
    /// output on to the zip and the sink as it comes.
    pub(super) async fn inflate_part(
        &self,
        part: &str,
        rec: &mut Recompressor,
        zip: &mut ZipWriter,
        out: &mut Vec<u8>,
        sink: &mut MultipartSink,
        budget: &mut Budget,
    ) -> Result<(), JobError> {
        let mut gunzip = Gunzip::default();
        let mut compressed = Vec::new();
        let (mut read, mut inflated) = (0u64, 0u64);
        let mut body = self.get(part).await?;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| stream_error("GetObject", e))?
        {
            read += chunk.len() as u64;
            gunzip
                .feed(&chunk, |plain| {
                    inflated += plain.len() as u64;
                    rec.write(plain)
                })
                .map_err(|e| corrupt(part, e))?;
            budget.check(part, read, inflated)?;
            rec.drain_into(&mut compressed);
            zip.write(&compressed, out);
            compressed.clear();
            sink.write(out).await?;
        }
        gunzip
            .finish(|plain| {
                inflated += plain.len() as u64;
                rec.write(plain)
            })
            .map_err(|e| corrupt(part, e))?;
        budget.check(part, read, inflated)?;
        // In the single layout parts share one entry; each counts towards the total here.
        budget.add(inflated);
        Ok(())
    }
}
