//! The DEFLATE decoder's inner loop ([`super::inflate`]): Huffman-coded symbols into the
//! output, literals and matches, until the output needs room, the input runs short or the
//! block ends.

use super::huffman::{
    KIND_DISTANCE, KIND_END, KIND_LENGTH, KIND_LITERAL, MAX_CODE, Table, extra_of, kind_of, len_of,
    value_of,
};
use super::inflate::{InflateError, MATCH_SLACK, peek};

/// Why [`symbols`] stopped.
pub(super) enum Stop {
    /// `out` may not have room for the next symbol's data.
    Room,
    /// The input is used up to the caller's limit.
    Limit,
    /// After the block's end-of-block code.
    EndOfBlock,
    Invalid(InflateError),
}

/// Where [`symbols`] stopped: the data in `out` ends at `end`, the input is read up to `bit`.
pub(super) struct Run {
    pub(super) end: usize,
    pub(super) bit: usize,
    pub(super) stop: Stop,
}

/// The decoder's inner loop: decodes symbols from `bit` on into `out` after `end` while `bit`
/// is at most `limit` and `out` has room for the longest match after `end`. A function of its
/// own borrows, not a method, so that the compiler knows the bytes written to `out` never
/// change the tables or the input and keeps their addresses in registers.
#[inline(never)]
pub(super) fn symbols<const L: usize, const D: usize>(
    out: &mut [u8],
    mut end: usize,
    literals: &Table<L>,
    distances: &Table<D>,
    input: &[u8],
    mut bit: usize,
    limit: usize,
) -> Run {
    // `bits` holds the input from `bit` on (at least 57 bits), `e` the entry of its first
    // code: each step looks up the next step's first code in the word it already holds, so
    // that reading the input is not in the way of that lookup.
    let mut bits = peek(input, bit);
    let mut e = literals.lookup(bits);
    let stop = loop {
        if bit > limit {
            break Stop::Limit;
        }
        // MATCH_SLACK bytes after `end`: room for any match, and for the eight bytes the
        // literals below are written as.
        let Some(room) = out
            .get_mut(end..end + MATCH_SLACK)
            .and_then(|r| r.first_chunk_mut::<8>())
        else {
            break Stop::Room;
        };
        let used = len_of(e);
        match kind_of(e) {
            KIND_LITERAL => {
                // An entry holds one or two literals (`Entry`), and literals come in runs:
                // the word holds two more entries' codes (at least 57 - 15 - 15 bits are left
                // after the second), the third only while the next step's code is left after
                // it. Up to six literals are gathered in one word.
                let (mut used, mut n, mut word) = (used, count(e), value_of(e) as u64);
                let second = literals.lookup(bits >> used);
                if kind_of(second) == KIND_LITERAL {
                    word |= (value_of(second) as u64) << (8 * n);
                    (used, n) = (used + len_of(second), n + count(second));
                    let third = literals.lookup(bits >> used);
                    if used <= LEFT - 2 * MAX_BITS && kind_of(third) == KIND_LITERAL {
                        word |= (value_of(third) as u64) << (8 * n);
                        (used, n) = (used + len_of(third), n + count(third));
                    }
                }
                *room = word.to_le_bytes();
                end += n;
                bit += used;
                // At most 57 - 15 bits used: the next code is in the word.
                e = literals.lookup(bits >> used);
                bits = peek(input, bit);
            }
            KIND_LENGTH => {
                let extra = extra_of(e);
                let length = value_of(e) + ((bits >> used) & ((1 << extra) - 1)) as usize;
                let rest = bits >> (used + extra as usize);
                let d = distances.lookup(rest);
                if kind_of(d) != KIND_DISTANCE {
                    break Stop::Invalid(InflateError("invalid distance code"));
                }
                let dextra = extra_of(d);
                let distance = value_of(d) + ((rest >> len_of(d)) & ((1 << dextra) - 1)) as usize;
                let taken = used + extra as usize + len_of(d) + dextra as usize;
                bit += taken;
                // Until `out` first makes room, `end` is all the stream produced; after,
                // `end` is at least the window, which no distance exceeds.
                if distance > end {
                    break Stop::Invalid(InflateError("distance too far back"));
                }
                copy_match(out, end, distance, length);
                end += length;
                // A match takes up to 48 bits: the next code is in the word unless it took
                // more than 42.
                e = literals.lookup(bits >> taken);
                bits = peek(input, bit);
                if taken > LEFT - MAX_BITS {
                    e = literals.lookup(bits);
                }
            }
            KIND_END => {
                bit += used;
                break Stop::EndOfBlock;
            }
            _ => break Stop::Invalid(InflateError("invalid literal/length code")),
        }
    };
    Run { end, bit, stop }
}

/// Bits a word read by `peek` holds at least, and a code's at most.
const LEFT: usize = 57;
const MAX_BITS: usize = MAX_CODE as usize;

/// Literals a literal entry stands for: 1 or 2 (`Entry`), in a form that shows the compiler
/// the shifts above stay inside the word.
#[inline(always)]
fn count(e: u32) -> usize {
    1 + (extra_of(e) as usize & 1)
}

/// Appends `length` bytes after `end` copied from `distance` back (the source may overlap the
/// copy). From 8 bytes back on, it copies 8 or 16 bytes at a time, each read from bytes already
/// written, and may write up to 15 bytes past the match (room `out` keeps after `end`; they are
/// overwritten by what follows).
#[inline(always)]
fn copy_match(out: &mut [u8], end: usize, distance: usize, length: usize) {
    let (mut from, mut to) = (end - distance, end);
    let stop = to + length;
    if distance >= 16 {
        while to < stop {
            let word: [u8; 16] = out[from..from + 16].try_into().unwrap_or([0; 16]);
            out[to..to + 16].copy_from_slice(&word);
            from += 16;
            to += 16;
        }
    } else if distance >= 8 {
        while to < stop {
            let word: [u8; 8] = out[from..from + 8].try_into().unwrap_or([0; 8]);
            out[to..to + 8].copy_from_slice(&word);
            from += 8;
            to += 8;
        }
    } else if distance == 1 {
        let byte = out[from];
        out[to..stop].fill(byte);
    } else {
        while to < stop {
            let n = (stop - to).min(to - from);
            out.copy_within(from..from + n, to);
            from += n;
            to += n;
        }
    }
}
