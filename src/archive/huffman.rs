//! Canonical Huffman codes as lookup tables, what DEFLATE's symbols mean, and the reading of a
//! dynamic block's code descriptions into its tables (RFC 1951 §3.2): the decoding tables of
//! [`super::inflate`].

use super::inflate::{InflateError, peek};

/// Longest code: 15 bits.
pub(super) const MAX_CODE: u32 = 15;
/// Entries of the primary literal/length and distance tables: codes of up to 10 and 9 bits are
/// looked up at once.
pub(super) const LIT_ENTRIES: usize = 1 << 10;
pub(super) const DIST_ENTRIES: usize = 1 << 9;

pub(super) const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
pub(super) const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
pub(super) const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
pub(super) const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// A table entry: bits 0–7 the code's length, 8–11 extra bits, 12–15 the kind, 16–31 the value.
/// A literal entry may stand for two literal codes in a row ([`Table::pair_literals`]): its
/// length is theirs together, its "extra bits" 1 (a single literal's are 0) and its value their
/// bytes, the first in bits 16–23.
pub(super) type Entry = u32;
pub(super) const KIND_LITERAL: u32 = 0;
pub(super) const KIND_LENGTH: u32 = 1;
pub(super) const KIND_END: u32 = 2;
pub(super) const KIND_LINK: u32 = 3;
pub(super) const KIND_INVALID: u32 = 4;
pub(super) const KIND_DISTANCE: u32 = 5;

pub(super) const fn entry(len: u32, extra: u32, kind: u32, value: u32) -> Entry {
    len | extra << 8 | kind << 12 | value << 16
}
pub(super) fn len_of(e: Entry) -> usize {
    (e & 0xff) as usize
}
pub(super) fn extra_of(e: Entry) -> u32 {
    (e >> 8) & 0xf
}
pub(super) fn kind_of(e: Entry) -> u32 {
    (e >> 12) & 0xf
}
pub(super) fn value_of(e: Entry) -> usize {
    (e >> 16) as usize
}

/// A canonical Huffman code as a two-level lookup table: a primary table of `N` entries
/// (`N` a power of two: its bits are looked up at once), then subtables for the longer codes.
/// The primary table is an array of `N` so that a lookup masked to `N - 1` needs no bounds
/// check; that lookup is the decoder's innermost step.
#[derive(Debug, Clone)]
pub(super) struct Table<const N: usize> {
    pub(super) primary: Box<[Entry; N]>,
    /// Subtables of `1 << (MAX_CODE - bits)` entries each, linked from `primary`.
    sub: Vec<Entry>,
}

impl<const N: usize> Table<N> {
    /// Bits of the primary table.
    const BITS: u32 = {
        assert!(N.is_power_of_two() && N > 1 && N <= 1 << MAX_CODE);
        N.trailing_zeros()
    };

    pub(super) fn new() -> Table<N> {
        Table {
            primary: Box::new([entry(0, 0, KIND_INVALID, 0); N]),
            sub: Vec::new(),
        }
    }

    /// Builds the code for `lengths`, symbol `s` decoding to `meaning(s)` (kind, extra, value).
    /// Incomplete codes are accepted only as zlib accepts them: one code of one bit, or none.
    pub(super) fn build(
        &mut self,
        lengths: &[u8],
        meaning: impl Fn(usize) -> (u32, u32, u32),
    ) -> Result<(), InflateError> {
        let mut count = [0u32; 16];
        for &l in lengths {
            count[usize::from(l)] += 1;
        }
        count[0] = 0;
        let mut left: i64 = 1;
        for c in &count[1..] {
            left = (left << 1) - i64::from(*c);
            if left < 0 {
                return Err(InflateError("over-subscribed Huffman code"));
            }
        }
        let max = (1..16).rev().find(|&l| count[l] != 0).unwrap_or(0);
        if left > 0 && max > 1 {
            return Err(InflateError("incomplete Huffman code"));
        }
        let mut next = [0u32; 16];
        let mut code = 0u32;
        for l in 1..16 {
            code = (code + count[l - 1]) << 1;
            next[l] = code;
        }
        let bits = Self::BITS;
        let sub_bits = MAX_CODE - bits;
        self.primary.fill(entry(0, 0, KIND_INVALID, 0));
        self.sub.clear();
        for (symbol, &l) in lengths.iter().enumerate() {
            if l == 0 {
                continue;
            }
            let l = u32::from(l);
            let reversed = reverse(next[l as usize], l);
            next[l as usize] += 1;
            let (kind, extra, value) = meaning(symbol);
            let e = entry(l, extra, kind, value);
            if l <= bits {
                let mut i = reversed as usize;
                while i < N {
                    self.primary[i] = e;
                    i += 1 << l;
                }
                continue;
            }
            let low = (reversed & ((1 << bits) - 1)) as usize;
            let link = self.primary[low];
            let base = if kind_of(link) == KIND_LINK {
                value_of(link)
            } else {
                let base = self.sub.len();
                self.sub
                    .resize(base + (1 << sub_bits), entry(0, 0, KIND_INVALID, 0));
                self.primary[low] = entry(bits, 0, KIND_LINK, base as u32);
                base
            };
            let mut i = (reversed >> bits) as usize;
            while i < 1 << sub_bits {
                self.sub[base + i] = e;
                i += 1 << (l - bits);
            }
        }
        Ok(())
    }

    /// Makes each primary entry of a literal whose bits also hold the whole code of a second
    /// literal stand for both, so that one lookup decodes two literals: data that is mostly
    /// literals (hashes, identifiers, text) decodes with half the lookups. The entry for the
    /// bits after the first code is the one at those bits (the table repeats every code's
    /// entry across the bits after it); entries are rewritten from the last down, so that
    /// entry, at a lower index, is still a single literal when read.
    pub(super) fn pair_literals(&mut self) {
        for i in (0..N).rev() {
            let first = self.primary[i];
            if kind_of(first) != KIND_LITERAL {
                continue;
            }
            let used = len_of(first);
            let second = self.primary[(i >> used) & (N - 1)];
            if kind_of(second) == KIND_LITERAL && used + len_of(second) <= Self::BITS as usize {
                self.primary[i] = entry(
                    (used + len_of(second)) as u32,
                    1,
                    KIND_LITERAL,
                    (value_of(first) | value_of(second) << 8) as u32,
                );
            }
        }
    }

    /// The entry for the code at the start of `bits`.
    #[inline(always)]
    pub(super) fn lookup(&self, bits: u64) -> Entry {
        let e = self.primary[bits as usize & (N - 1)];
        if kind_of(e) != KIND_LINK {
            return e;
        }
        let sub = (bits >> Self::BITS) as usize & ((1 << (MAX_CODE - Self::BITS)) - 1);
        // A link is only ever written with a base inside `sub`; an out-of-range one would be
        // a bug in `build`, and reads as an invalid code rather than a panic.
        self.sub
            .get(value_of(e) + sub)
            .copied()
            .unwrap_or(entry(0, 0, KIND_INVALID, 0))
    }
}

pub(super) fn reverse(code: u32, len: u32) -> u32 {
    code.reverse_bits() >> (32 - len)
}

pub(super) fn literal_meaning(symbol: usize) -> (u32, u32, u32) {
    match symbol {
        0..=255 => (KIND_LITERAL, 0, symbol as u32),
        256 => (KIND_END, 0, 0),
        257..=285 => (
            KIND_LENGTH,
            u32::from(LENGTH_EXTRA[symbol - 257]),
            u32::from(LENGTH_BASE[symbol - 257]),
        ),
        _ => (KIND_INVALID, 0, 0),
    }
}

pub(super) fn distance_meaning(symbol: usize) -> (u32, u32, u32) {
    match symbol {
        0..=29 => (
            KIND_DISTANCE,
            u32::from(DIST_EXTRA[symbol]),
            u32::from(DIST_BASE[symbol]),
        ),
        _ => (KIND_INVALID, 0, 0),
    }
}

/// Order in which the code-length code's lengths are stored.
const CLEN_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// Reads a dynamic block's code descriptions (RFC 1951 §3.2.7) from `bit` on and builds its
/// tables; returns the bit after them.
pub(super) fn read_dynamic_header(
    input: &[u8],
    mut bit: usize,
    literals: &mut Table<LIT_ENTRIES>,
    distances: &mut Table<DIST_ENTRIES>,
) -> Result<usize, InflateError> {
    let bits = peek(input, bit);
    let nlit = 257 + (bits & 0x1f) as usize;
    let ndist = 1 + ((bits >> 5) & 0x1f) as usize;
    let nclen = 4 + ((bits >> 10) & 0xf) as usize;
    bit += 14;
    if nlit > 286 || ndist > 30 {
        return Err(InflateError("too many length or distance codes"));
    }
    let mut clen = [0u8; 19];
    for &i in &CLEN_ORDER[..nclen] {
        clen[i] = (peek(input, bit) & 7) as u8;
        bit += 3;
    }
    let mut code_lengths = Table::<128>::new();
    code_lengths.build(&clen, |s| (KIND_LITERAL, 0, s as u32))?;
    // Codes of at most 7 bits fill every entry of a 7-bit table only when complete, and
    // zlib accepts no incomplete code-length code.
    if code_lengths
        .primary
        .iter()
        .any(|e| kind_of(*e) == KIND_INVALID)
    {
        return Err(InflateError("incomplete code length code"));
    }
    let mut lengths = [0u8; 286 + 30];
    let mut n = 0;
    while n < nlit + ndist {
        let bits = peek(input, bit);
        let e = code_lengths.lookup(bits);
        if kind_of(e) == KIND_INVALID {
            return Err(InflateError("invalid code length code"));
        }
        bit += len_of(e);
        let rest = bits >> len_of(e);
        let (value, repeat, extra) = match value_of(e) {
            l @ 0..=15 => (l as u8, 1, 0),
            16 => {
                let Some(previous) = n.checked_sub(1).map(|p| lengths[p]) else {
                    return Err(InflateError("repeat with no previous length"));
                };
                (previous, 3 + (rest & 3) as usize, 2)
            }
            17 => (0, 3 + (rest & 7) as usize, 3),
            _ => (0, 11 + (rest & 0x7f) as usize, 7),
        };
        bit += extra;
        if n + repeat > nlit + ndist {
            return Err(InflateError("too many code lengths"));
        }
        lengths[n..n + repeat].fill(value);
        n += repeat;
    }
    if lengths[256] == 0 {
        return Err(InflateError("no end-of-block code"));
    }
    literals.build(&lengths[..nlit], literal_meaning)?;
    literals.pair_literals();
    distances.build(&lengths[nlit..nlit + ndist], distance_meaning)?;
    Ok(bit)
}
