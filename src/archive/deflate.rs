//! Producing a zip entry's DEFLATE data, with its CRC-32 and sizes, from UNLOAD's gzip parts.
//!
//! Two ways, both streaming with fixed-size buffers:
//! - [`Recompressor`]: plain bytes in (from any number of gzip members, or written directly),
//!   one DEFLATE stream out. Works for everything; costs a full compression.
//! - [`PassThrough`]: one single-member gzip file in, its DEFLATE body copied out unchanged.
//!   A gzip member's body is exactly what a method-8 entry holds. The body is inflated into a
//!   throw-away buffer on the way, so the CRC-32 and the 64-bit size recorded are the real ones
//!   (the gzip trailer's ISIZE wraps at 4 GiB and describes only the last member); the trailer
//!   is checked against them. Anything after the first member is reported as
//!   [`PassError::MultiMember`] so the caller can fall back to recompression.

use std::io::Write;

use flate2::{Decompress, FlushDecompress, Status};

use super::edits::{Edit, Edits};

/// Plain data in, one DEFLATE stream out.
pub struct Recompressor {
    encoder: flate2::write::DeflateEncoder<Vec<u8>>,
    crc: crc32fast::Hasher,
    size: u64,
    compressed: u64,
}

impl Recompressor {
    pub fn new(level: u32) -> Self {
        Recompressor {
            encoder: flate2::write::DeflateEncoder::new(
                Vec::new(),
                flate2::Compression::new(level),
            ),
            crc: crc32fast::Hasher::new(),
            size: 0,
            compressed: 0,
        }
    }

    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.crc.update(data);
        self.size += data.len() as u64;
        self.encoder.write_all(data)
    }

    /// Moves the compressed bytes produced so far into `out`.
    pub fn drain_into(&mut self, out: &mut Vec<u8>) {
        let buf = self.encoder.get_mut();
        self.compressed += buf.len() as u64;
        out.append(buf);
    }

    /// Ends the stream; returns (crc, compressed size, uncompressed size).
    pub fn finish_into(mut self, out: &mut Vec<u8>) -> std::io::Result<(u32, u64, u64)> {
        self.drain_into(out);
        let tail = self.encoder.finish()?;
        self.compressed += tail.len() as u64;
        out.extend_from_slice(&tail);
        Ok((self.crc.finalize(), self.compressed, self.size))
    }
}

/// Inflates gzip data (any number of members) chunk by chunk.
pub struct Gunzip {
    decoder: flate2::write::MultiGzDecoder<Vec<u8>>,
}

impl Default for Gunzip {
    fn default() -> Self {
        Gunzip {
            decoder: flate2::write::MultiGzDecoder::new(Vec::new()),
        }
    }
}

impl Gunzip {
    /// Decodes `chunk`, passing the plain bytes to `sink` in bounded pieces.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        // Bounded input pieces keep the decoded buffer bounded too (DEFLATE expands ≤ 1032:1).
        for piece in chunk.chunks(16 * 1024) {
            self.decoder.write_all(piece)?;
            let plain = self.decoder.get_mut();
            sink(plain)?;
            plain.clear();
        }
        Ok(())
    }

    pub fn finish(
        mut self,
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        self.decoder.try_finish()?;
        let rest = self.decoder.finish()?;
        sink(&rest)
    }
}

/// Why a part cannot be passed through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassError {
    #[error("the gzip data is corrupt: {0}")]
    Corrupt(String),
    #[error("the gzip file has more than one member")]
    MultiMember,
}

enum Stage {
    Header,
    Body,
    Trailer,
    Done,
}

/// Largest gzip header accepted (FEXTRA, FNAME and FCOMMENT included).
const MAX_HEADER: usize = 64 * 1024;

/// One single-member gzip file in, its raw DEFLATE body out, verified.
pub struct PassThrough {
    stage: Stage,
    pending: Vec<u8>,
    inflate: Decompress,
    scratch: Vec<u8>,
    crc: crc32fast::Hasher,
    size: u64,
    compressed: u64,
    header: u64,
}

impl Default for PassThrough {
    fn default() -> Self {
        PassThrough {
            stage: Stage::Header,
            pending: Vec::new(),
            inflate: Decompress::new(false),
            scratch: vec![0; 64 * 1024],
            crc: crc32fast::Hasher::new(),
            size: 0,
            compressed: 0,
            header: 0,
        }
    }
}

/// Length of a complete gzip header at the start of `b`, `Ok(None)` if more bytes are needed.
pub(super) fn header_len(b: &[u8]) -> Result<Option<usize>, PassError> {
    if b.len() < 10 {
        return Ok(None);
    }
    if b[0] != 0x1f || b[1] != 0x8b || b[2] != 8 {
        return Err(PassError::Corrupt("not a gzip (deflate) header".into()));
    }
    let flags = b[3];
    if flags & 0xe0 != 0 {
        return Err(PassError::Corrupt("reserved gzip flag bits are set".into()));
    }
    let mut p = 10;
    if flags & 0x04 != 0 {
        let Some(xlen) = b.get(p..p + 2) else {
            return Ok(None);
        };
        p += 2 + usize::from(u16::from_le_bytes([xlen[0], xlen[1]]));
    }
    for flag in [0x08, 0x10] {
        if flags & flag != 0 {
            match b
                .get(p..)
                .and_then(|rest| rest.iter().position(|c| *c == 0))
            {
                Some(nul) => p += nul + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & 0x02 != 0 {
        // FHCRC: the low 16 bits of the CRC-32 of the header before it (RFC 1952 §2.3.1). A
        // header that does not match it is corrupt, as other decoders (flate2) also judge.
        let Some(stored) = b.get(p..p + 2) else {
            return Ok(None);
        };
        let actual = crc32fast::hash(&b[..p]) & 0xffff;
        if u32::from(u16::from_le_bytes([stored[0], stored[1]])) != actual {
            return Err(PassError::Corrupt(
                "the gzip header's CRC does not match".into(),
            ));
        }
        p += 2;
    }
    Ok((b.len() >= p).then_some(p))
}

impl PassThrough {
    /// Data bytes inflated so far (the verified size of what has been passed through).
    pub fn inflated(&self) -> u64 {
        self.size
    }

    /// Consumes `input`, appending the DEFLATE body bytes to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), PassError> {
        while !input.is_empty() {
            match self.stage {
                Stage::Header => {
                    self.pending.extend_from_slice(input);
                    input = &[];
                    match header_len(&self.pending)? {
                        None if self.pending.len() > MAX_HEADER => {
                            return Err(PassError::Corrupt("gzip header too large".into()));
                        }
                        None => {}
                        Some(n) => {
                            self.header = n as u64;
                            let rest = self.pending.split_off(n);
                            self.pending.clear();
                            self.stage = Stage::Body;
                            self.feed(&rest, out)?;
                        }
                    }
                }
                Stage::Body => input = self.inflate_some(input, out)?,
                Stage::Trailer => {
                    let want = 8 - self.pending.len();
                    let take = want.min(input.len());
                    self.pending.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if self.pending.len() == 8 {
                        self.check_trailer()?;
                        self.stage = Stage::Done;
                    }
                }
                Stage::Done => {
                    return Err(if input.starts_with(&[0x1f]) {
                        PassError::MultiMember
                    } else {
                        PassError::Corrupt("data after the gzip trailer".into())
                    });
                }
            }
        }
        Ok(())
    }

    /// Inflates as much of `input` as belongs to the DEFLATE stream; returns the rest.
    fn inflate_some<'a>(
        &mut self,
        mut input: &'a [u8],
        out: &mut Vec<u8>,
    ) -> Result<&'a [u8], PassError> {
        loop {
            let (in_before, out_before) = (self.inflate.total_in(), self.inflate.total_out());
            let status = self
                .inflate
                .decompress(input, &mut self.scratch, FlushDecompress::None)
                .map_err(|e| PassError::Corrupt(e.to_string()))?;
            let consumed = (self.inflate.total_in() - in_before) as usize;
            let produced = (self.inflate.total_out() - out_before) as usize;
            out.extend_from_slice(&input[..consumed]);
            self.compressed += consumed as u64;
            self.crc.update(&self.scratch[..produced]);
            self.size += produced as u64;
            input = &input[consumed..];
            if status == Status::StreamEnd {
                self.stage = Stage::Trailer;
                self.pending.clear();
                return Ok(input);
            }
            if consumed == 0 && produced == 0 {
                return Ok(input);
            }
        }
    }

    fn check_trailer(&self) -> Result<(), PassError> {
        let t = &self.pending;
        let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
        let isize = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
        let real = self.crc.clone().finalize();
        if crc != real {
            return Err(PassError::Corrupt(format!(
                "CRC mismatch: trailer {crc:08x}, data {real:08x}"
            )));
        }
        if isize != self.size as u32 {
            return Err(PassError::Corrupt(format!(
                "size mismatch: trailer {isize}, data {}",
                self.size
            )));
        }
        Ok(())
    }

    /// How the file's bytes become the DEFLATE body passed through: header and trailer left
    /// out (once the whole member was seen).
    pub fn edits(&self) -> Edits {
        let mut edits = Edits::default();
        edits.push(Edit::Skip {
            at: 0,
            len: self.header,
        });
        edits.push(Edit::Skip {
            at: self.header + self.compressed,
            len: 8,
        });
        edits
    }

    /// Returns (crc, compressed size, uncompressed size) once the whole member was seen.
    pub fn finish(self) -> Result<(u32, u64, u64), PassError> {
        match self.stage {
            Stage::Done => Ok((self.crc.finalize(), self.compressed, self.size)),
            _ => Err(PassError::Corrupt("the gzip data is truncated".into())),
        }
    }
}

#[cfg(test)]
#[path = "deflate_tests.rs"]
mod tests;
