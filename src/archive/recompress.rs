//! The fallback: entries built by inflating the parts with zlib and compressing the data
//! again at `archive.compression_level`, reading each part once, in order. Used when a part
//! cannot be passed through or joined (`parts.rs`); zlib then judges whether it is corrupt.

use aws_sdk_s3::primitives::ByteStream;

use super::deflate::{Gunzip, Recompressor};
use super::limits::Budget;
use super::sink::MultipartSink;
use super::zip::ZipWriter;
use super::{Archiver, BuildError, archive_io, corrupt, stream_error};
use crate::aws::AwsResultExt;
use crate::error::JobError;

impl Archiver {
    pub(super) async fn get(&self, key: &str) -> Result<ByteStream, JobError> {
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
