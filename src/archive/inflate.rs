//! A streaming DEFLATE decoder (RFC 1951) that knows where the stream's blocks are.
//!
//! zlib can stop at block boundaries (`Z_BLOCK`) but no safe Rust binding exposes that, and
//! joining DEFLATE streams ([`super::join`]) needs exactly one fact a plain inflater hides: the
//! bit that marks the final block, and the bit where the stream ends. This decoder produces
//! the data (so the caller can verify CRC-32 and sizes) and, when asked, clears the final
//! block's BFINAL bit in the caller's input buffer as it reads the block header.
//!
//! It is deliberately at least as strict as zlib: anything zlib would reject is an error here,
//! and a few things zlib tolerates are errors too (a code-length code with no codes); the
//! caller then falls back to zlib itself. Back-references must stay inside this stream's own
//! data, which is what makes a stream safe to join after another one.

use std::ops::ControlFlow;

use super::huffman::{
    DIST_ENTRIES, LIT_ENTRIES, Table, distance_meaning, literal_meaning, read_dynamic_header,
};
use super::symbols::{Stop, symbols};

/// How far back a DEFLATE back-reference may reach.
const WINDOW: usize = 32 * 1024;
/// New data collected before it is handed to the caller (and the window slid).
const CHUNK: usize = 256 * 1024;
/// Longest match.
const MAX_MATCH: usize = 258;
/// What a match may write past the data's end (`copy_match` copies in words of up to 16).
pub(super) const MATCH_SLACK: usize = MAX_MATCH + 16;
/// `out` at its largest: the window, a chunk, and room for the match that fills it.
const OUT_BYTES: usize = WINDOW + CHUNK + MATCH_SLACK;
/// `out` at first: a small stream (a part of one row) never touches more.
const FIRST_OUT_BYTES: usize = 4 * 1024 + MATCH_SLACK;
/// Bits one length/distance pair needs at most: 15 + 5 + 15 + 13.
const MAX_SEQUENCE_BITS: usize = 48;
/// A dynamic block header is at most 3 + 14 + 19×3 + 320×14 bits; it is only decoded once
/// this much input is available (or the input is complete).
const MAX_HEADER_BYTES: usize = 600;

/// What is wrong with a DEFLATE stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid DEFLATE data: {0}")]
pub struct InflateError(pub(super) &'static str);

/// Where a call to [`Inflate::run`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More input is needed; the input before `bit / 8` has been consumed.
    NeedInput { bit: usize },
    /// The final block ended at `bit` (the bits after it in that byte are padding).
    Done { bit: usize },
}

/// 64 bits of `input` from bit `pos` on (at least 57 meaningful), zeros past its end.
#[inline(always)]
pub(super) fn peek(input: &[u8], pos: usize) -> u64 {
    let p = pos >> 3;
    let word = match input.get(p..).and_then(|s| s.first_chunk::<8>()) {
        Some(w) => u64::from_le_bytes(*w),
        None => {
            let mut w = [0u8; 8];
            let tail = input.get(p..).unwrap_or_default();
            w[..tail.len()].copy_from_slice(tail);
            u64::from_le_bytes(w)
        }
    };
    word >> (pos & 7)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At a block header.
    Header,
    /// Inside a stored block, this many bytes to go.
    Stored(usize),
    /// Inside a Huffman-coded block.
    Codes,
    Done,
}

/// One DEFLATE stream being decoded. See the module documentation.
pub struct Inflate {
    state: State,
    /// Whether the block being decoded is the final one.
    final_block: bool,
    clear_final: bool,
    /// Where the BFINAL bit was cleared, in the input of the last [`Inflate::run`].
    cleared_at: Option<usize>,
    literals: Table<LIT_ENTRIES>,
    distances: Table<DIST_ENTRIES>,
    /// The last [`WINDOW`] bytes of data, then the data not yet handed out; it grows from
    /// [`FIRST_OUT_BYTES`] to [`OUT_BYTES`] as the stream needs.
    out: Vec<u8>,
    /// End of the data in `out`.
    end: usize,
    /// Start of the data in `out` not yet handed out.
    fresh: usize,
    /// Data bytes of this stream moved out of `out` to make room: the stream has produced
    /// `dropped + end` bytes.
    dropped: u64,
}

impl Inflate {
    /// A decoder; with `clear_final` it clears the final block's BFINAL bit in the input.
    pub fn new(clear_final: bool) -> Inflate {
        Inflate {
            state: State::Header,
            final_block: false,
            clear_final,
            cleared_at: None,
            literals: Table::new(),
            distances: Table::new(),
            out: vec![0; FIRST_OUT_BYTES],
            end: 0,
            fresh: 0,
            dropped: 0,
        }
    }

    /// Decodes `input` from bit `bit` on, handing the data to `data` in pieces. With
    /// `complete` the input holds everything that is left, so running out of it is an error.
    /// On [`Progress::NeedInput`] call again with the unconsumed input (from byte `bit / 8`,
    /// bit `bit % 8`) followed by more.
    pub fn run(
        &mut self,
        input: &mut [u8],
        mut bit: usize,
        complete: bool,
        data: &mut impl FnMut(&[u8]),
    ) -> Result<Progress, InflateError> {
        let avail = input.len() * 8;
        let outcome = loop {
            match self.state {
                State::Done => break Ok(Progress::Done { bit }),
                State::Header => {
                    if !complete && avail < bit + MAX_HEADER_BYTES * 8 {
                        break Ok(Progress::NeedInput { bit });
                    }
                    match self.header(input, bit) {
                        Ok(next) => bit = next,
                        Err(e) => break Err(e),
                    }
                }
                State::Stored(left) => {
                    let start = bit / 8;
                    let take = left.min(input.len().saturating_sub(start));
                    self.copy_stored(&input[start..start + take], data);
                    bit += take * 8;
                    if take < left {
                        self.state = State::Stored(left - take);
                        break Ok(Progress::NeedInput { bit });
                    }
                    self.state = self.after_block();
                }
                State::Codes => match self.codes(input, bit, complete, data) {
                    Ok(ControlFlow::Continue(next)) => bit = next,
                    Ok(ControlFlow::Break(next)) => break Ok(Progress::NeedInput { bit: next }),
                    Err(e) => break Err(e),
                },
            }
            if bit > avail {
                break Err(InflateError("truncated stream"));
            }
        };
        self.hand_out(data);
        match outcome {
            Ok(Progress::NeedInput { .. }) if complete => Err(InflateError("truncated stream")),
            other => other,
        }
    }

    /// The bit of the last [`Inflate::run`]'s input whose BFINAL it cleared, once.
    pub fn take_cleared(&mut self) -> Option<usize> {
        self.cleared_at.take()
    }

    /// Data bytes this stream has produced.
    pub fn total_out(&self) -> u64 {
        self.dropped + self.end as u64
    }

    /// Forgets the stream so that another one can be decoded.
    pub fn reset(&mut self) {
        self.state = State::Header;
        self.final_block = false;
        self.cleared_at = None;
        self.end = 0;
        self.fresh = 0;
        self.dropped = 0;
    }

    fn after_block(&self) -> State {
        if self.final_block {
            State::Done
        } else {
            State::Header
        }
    }

    /// Reads a block header at `bit`; returns the bit after it.
    fn header(&mut self, input: &mut [u8], mut bit: usize) -> Result<usize, InflateError> {
        let bits = peek(input, bit);
        self.final_block = bits & 1 == 1;
        if self.final_block
            && self.clear_final
            && let Some(byte) = input.get_mut(bit / 8)
        {
            *byte &= !(1u8 << (bit % 8));
            self.cleared_at = Some(bit);
        }
        let kind = (bits >> 1) & 3;
        bit += 3;
        match kind {
            0 => {
                let start = bit.div_ceil(8);
                let Some(head) = input.get(start..start + 4) else {
                    return Err(InflateError("truncated stored block header"));
                };
                let len = u16::from_le_bytes([head[0], head[1]]);
                let nlen = u16::from_le_bytes([head[2], head[3]]);
                if len != !nlen {
                    return Err(InflateError(
                        "stored block length does not match its complement",
                    ));
                }
                self.state = State::Stored(usize::from(len));
                Ok((start + 4) * 8)
            }
            1 => {
                let mut lengths = [0u8; 288 + 32];
                lengths[..144].fill(8);
                lengths[144..256].fill(9);
                lengths[256..280].fill(7);
                lengths[280..288].fill(8);
                lengths[288..].fill(5);
                self.literals.build(&lengths[..288], literal_meaning)?;
                self.distances.build(&lengths[288..], distance_meaning)?;
                self.state = State::Codes;
                Ok(bit)
            }
            2 => {
                let bit = self.dynamic_header(input, bit)?;
                self.state = State::Codes;
                Ok(bit)
            }
            _ => Err(InflateError("invalid block type")),
        }
    }

    /// Reads a dynamic block's code descriptions and builds its tables.
    fn dynamic_header(&mut self, input: &[u8], bit: usize) -> Result<usize, InflateError> {
        read_dynamic_header(input, bit, &mut self.literals, &mut self.distances)
    }

    /// Decodes a Huffman-coded block. `Continue` with the bit after its end-of-block code,
    /// `Break` at a symbol boundary when more input is needed.
    fn codes(
        &mut self,
        input: &[u8],
        mut bit: usize,
        complete: bool,
        data: &mut impl FnMut(&[u8]),
    ) -> Result<ControlFlow<usize, usize>, InflateError> {
        let avail = input.len() * 8;
        // Without `complete`, stop where a whole sequence (and the word read for it) might not
        // be there any more; with it, past the end of the input.
        let limit = if complete {
            avail
        } else {
            match avail.checked_sub(MAX_SEQUENCE_BITS + 64) {
                Some(limit) if limit > 0 => limit,
                _ => return Ok(ControlFlow::Break(bit)),
            }
        };
        loop {
            let run = symbols(
                &mut self.out,
                self.end,
                &self.literals,
                &self.distances,
                input,
                bit,
                limit,
            );
            self.end = run.end;
            bit = run.bit;
            match run.stop {
                Stop::Room => self.make_room(data),
                Stop::Limit if complete => return Err(InflateError("truncated stream")),
                Stop::Limit => return Ok(ControlFlow::Break(bit)),
                Stop::EndOfBlock => {
                    self.state = self.after_block();
                    return Ok(ControlFlow::Continue(bit));
                }
                Stop::Invalid(e) => return Err(e),
            }
        }
    }

    fn copy_stored(&mut self, mut bytes: &[u8], data: &mut impl FnMut(&[u8])) {
        while !bytes.is_empty() {
            if self.end + MATCH_SLACK > self.out.len() {
                self.make_room(data);
            }
            let n = bytes.len().min(self.out.len() - self.end);
            self.out[self.end..self.end + n].copy_from_slice(&bytes[..n]);
            self.end += n;
            bytes = &bytes[n..];
        }
    }

    /// Called when a match might not fit after `end`: grows `out` while it is smaller than
    /// [`OUT_BYTES`]; then hands out the new data and keeps only the window.
    fn make_room(&mut self, data: &mut impl FnMut(&[u8])) {
        if self.out.len() < OUT_BYTES {
            let len = (self.out.len() * 2).min(OUT_BYTES);
            self.out.resize(len, 0);
            return;
        }
        self.hand_out(data);
        self.out.copy_within(self.end - WINDOW..self.end, 0);
        self.dropped += (self.end - WINDOW) as u64;
        self.end = WINDOW;
        self.fresh = WINDOW;
    }

    fn hand_out(&mut self, data: &mut impl FnMut(&[u8])) {
        if self.end > self.fresh {
            data(&self.out[self.fresh..self.end]);
            self.fresh = self.end;
        }
    }
}

#[cfg(test)]
#[path = "inflate_tests.rs"]
mod tests;
