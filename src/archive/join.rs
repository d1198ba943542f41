//! One DEFLATE stream out of many gzip members, without compressing anything again: the
//! technique of zlib's `examples/gzjoin.c`.
//!
//! A `single` entry is: the CSV header line as stored blocks (not final), then each part's
//! members' DEFLATE data with the final block's BFINAL bit cleared and the stream brought to a
//! byte boundary by an empty stored block, then one final empty block. Every member is
//! decoded on the way ([`Inflate`]), which finds the final block and verifies the data: the
//! CRC-32 and size are recomputed and checked against each member's trailer, and the entry's
//! CRC-32 is combined from the parts'. A member's back-references never reach before its own
//! start (the decoder refuses them), so each member decodes the same inside the joined stream.

use super::deflate::header_len;
use super::edits::{Edit, Edits};
use super::inflate::{Inflate, InflateError, Progress};

/// Why a part cannot be joined (the caller compresses it again instead, or fails).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Deflate(#[from] InflateError),
    #[error("the gzip data is corrupt: {0}")]
    Gzip(String),
}

/// A joined part: its data's CRC-32 (combinable) and sizes, and how its bytes became the
/// DEFLATE bytes written.
#[derive(Debug, Clone)]
pub struct Joined {
    pub crc: crc32fast::Hasher,
    /// Data bytes.
    pub size: u64,
    /// DEFLATE bytes written for it.
    pub compressed: u64,
    /// The part's bytes with these changes are the DEFLATE bytes written.
    pub edits: Edits,
    /// The part's length.
    pub length: u64,
}

enum Stage {
    Header,
    Body,
    Trailer,
    /// After a trailer: the end, or another member.
    Between,
}

/// Largest gzip header accepted (FEXTRA, FNAME and FCOMMENT included).
const MAX_HEADER: usize = 64 * 1024;
/// The LEN = 0 and NLEN = 0xffff of the empty stored block that ends each member's data on
/// a byte boundary (its three header bits, all zero, come before).
const ALIGN: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// The final block that ends a joined stream: an empty fixed-code block (BFINAL = 1,
/// BTYPE = 01, end-of-block code 0000000), from a byte boundary.
pub const LAST_BLOCK: [u8; 2] = [0x03, 0x00];

/// Joins one gzip file (one or more members) onto a DEFLATE stream being built.
pub struct Joiner {
    stage: Stage,
    /// Input not yet consumed; the next bit to decode is `bit` of it.
    pending: Vec<u8>,
    bit: usize,
    /// Offset in the part of `pending[0]`.
    offset: u64,
    edits: Edits,
    inflate: Inflate,
    member: crc32fast::Hasher,
    crc: crc32fast::Hasher,
    size: u64,
    compressed: u64,
    members: u64,
    /// Only record the edits: the DEFLATE bytes are made later from them.
    record_only: bool,
}

impl Default for Joiner {
    fn default() -> Self {
        Joiner {
            stage: Stage::Header,
            pending: Vec::new(),
            bit: 0,
            offset: 0,
            edits: Edits::default(),
            inflate: Inflate::new(true),
            member: crc32fast::Hasher::new(),
            crc: crc32fast::Hasher::new(),
            size: 0,
            compressed: 0,
            members: 0,
            record_only: false,
        }
    }
}

impl Joiner {
    /// A joiner that verifies and records [`Joined::edits`] without writing the part's DEFLATE
    /// bytes (only the few it adds).
    pub fn recording() -> Joiner {
        Joiner {
            record_only: true,
            ..Joiner::default()
        }
    }

    /// Data bytes decoded so far.
    pub fn inflated(&self) -> u64 {
        self.size
    }

    /// The part's bytes before this offset are verified as far as they can be before the
    /// member's end (they decode) and final: every change recorded from now on is at or
    /// after it, so [`Joiner::edits`] already holds all of theirs.
    pub fn settled(&self) -> u64 {
        self.offset
    }

    /// The changes recorded so far.
    pub fn edits(&self) -> &Edits {
        &self.edits
    }

    /// Consumes `chunk`, appending DEFLATE bytes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), JoinError> {
        self.pending.extend_from_slice(chunk);
        self.advance(false, out)
    }

    /// Ends the file; the data must end with a whole member.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<Joined, JoinError> {
        self.advance(true, out)?;
        match self.stage {
            Stage::Between if self.members > 0 => Ok(Joined {
                crc: self.crc,
                size: self.size,
                compressed: self.compressed,
                edits: self.edits,
                length: self.offset,
            }),
            _ => Err(JoinError::Gzip("the gzip data is truncated".into())),
        }
    }

    fn advance(&mut self, complete: bool, out: &mut Vec<u8>) -> Result<(), JoinError> {
        loop {
            match self.stage {
                Stage::Header => {
                    match header_len(&self.pending).map_err(|e| JoinError::Gzip(e.to_string()))? {
                        None if self.pending.len() > MAX_HEADER => {
                            return Err(JoinError::Gzip("gzip header too large".into()));
                        }
                        None => return Ok(()),
                        Some(n) => {
                            self.skip(n);
                            self.bit = 0;
                            self.inflate.reset();
                            self.member = crc32fast::Hasher::new();
                            self.stage = Stage::Body;
                        }
                    }
                }
                Stage::Body => {
                    if !self.body(complete, out)? {
                        return Ok(());
                    }
                }
                Stage::Trailer => {
                    let Some(t) = self.pending.first_chunk::<8>() else {
                        return Ok(());
                    };
                    let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
                    let isize = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
                    let real = self.member.clone().finalize();
                    if crc != real {
                        return Err(JoinError::Gzip(format!(
                            "CRC mismatch: trailer {crc:08x}, data {real:08x}"
                        )));
                    }
                    if isize != self.inflate.total_out() as u32 {
                        return Err(JoinError::Gzip(format!(
                            "size mismatch: trailer {isize}, data {}",
                            self.inflate.total_out()
                        )));
                    }
                    self.skip(8);
                    self.crc.combine(&self.member);
                    self.members += 1;
                    self.stage = Stage::Between;
                }
                Stage::Between => match self.pending.first() {
                    None => return Ok(()),
                    Some(0x1f) => self.stage = Stage::Header,
                    Some(_) => return Err(JoinError::Gzip("data after the gzip trailer".into())),
                },
            }
        }
    }

    /// Decodes what there is of a member's DEFLATE data, passing the bytes consumed on.
    /// Returns whether the member's stream ended.
    fn body(&mut self, complete: bool, out: &mut Vec<u8>) -> Result<bool, JoinError> {
        let (member, size) = (&mut self.member, &mut self.size);
        let progress = self
            .inflate
            .run(&mut self.pending, self.bit, complete, &mut |data| {
                member.update(data);
                *size += data.len() as u64;
            })?;
        if let Some(bit) = self.inflate.take_cleared() {
            self.edits.push(Edit::Mask {
                at: self.offset + (bit / 8) as u64,
                mask: !(1u8 << (bit % 8)),
            });
        }
        match progress {
            Progress::NeedInput { bit } => {
                let whole = bit / 8;
                self.emit(whole, out);
                self.bit = bit % 8;
                Ok(false)
            }
            Progress::Done { bit } => {
                let (whole, used) = (bit / 8, bit % 8);
                self.emit(whole, out);
                let before = out.len();
                if used > 0 {
                    // The stream's last bits, the padding after them cleared: the empty stored
                    // block's three header bits go there when they fit.
                    let mask = (1u8 << used) - 1;
                    out.push(self.pending[0] & mask);
                    self.edits.push(Edit::Mask {
                        at: self.offset,
                        mask,
                    });
                    self.pending.drain(..1);
                    self.offset += 1;
                }
                let mut align = Vec::with_capacity(5);
                if used == 0 || used > 5 {
                    align.push(0);
                }
                align.extend_from_slice(&ALIGN);
                out.extend_from_slice(&align);
                self.edits.push(Edit::Insert {
                    at: self.offset,
                    bytes: align,
                });
                self.compressed += (out.len() - before) as u64;
                self.stage = Stage::Trailer;
                Ok(true)
            }
        }
    }

    fn emit(&mut self, n: usize, out: &mut Vec<u8>) {
        if !self.record_only {
            out.extend_from_slice(&self.pending[..n]);
        }
        self.pending.drain(..n);
        self.offset += n as u64;
        self.compressed += n as u64;
    }

    /// Leaves out `n` bytes (a gzip header or trailer).
    fn skip(&mut self, n: usize) {
        self.pending.drain(..n);
        self.edits.push(Edit::Skip {
            at: self.offset,
            len: n as u64,
        });
        self.offset += n as u64;
    }
}

/// `data` as stored blocks that are not final, from a byte boundary.
pub fn stored(data: &[u8], out: &mut Vec<u8>) -> u64 {
    let before = out.len();
    for block in data.chunks(usize::from(u16::MAX)) {
        let len = block.len() as u16;
        out.push(0);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    (out.len() - before) as u64
}

#[cfg(test)]
#[path = "join_tests.rs"]
mod tests;
