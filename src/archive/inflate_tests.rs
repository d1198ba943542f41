//! The decoder against zlib (flate2): the same data from every valid stream, and never
//! accepting a stream zlib refuses.

use super::*;
use proptest::prelude::*;
use std::io::{Read, Write};

fn deflate(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib_inflate(raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    flate2::read::DeflateDecoder::new(raw).read_to_end(&mut v)?;
    Ok(v)
}

/// Decodes `raw` fed in pieces of `chunk` bytes; returns the data and the end bit.
fn ours(raw: &[u8], chunk: usize) -> Result<(Vec<u8>, usize), InflateError> {
    let mut inflate = Inflate::new(false);
    let mut data = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let (mut bit, mut consumed) = (0, 0);
    let mut sink = |d: &[u8]| data.extend_from_slice(d);
    let mut pieces = raw.chunks(chunk.max(1)).peekable();
    while let Some(piece) = pieces.next() {
        pending.extend_from_slice(piece);
        let complete = pieces.peek().is_none();
        match inflate.run(&mut pending, bit, complete, &mut sink)? {
            Progress::NeedInput { bit: b } => {
                pending.drain(..b / 8);
                consumed += b / 8;
                bit = b % 8;
            }
            Progress::Done { bit: b } => {
                assert_eq!(inflate.total_out(), data.len() as u64);
                return Ok((data, consumed * 8 + b));
            }
        }
    }
    Err(InflateError("no input"))
}

fn sample(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|i| format!("{i},customer {},{}\n", rng.u32(..1000), rng.f64()))
        .collect::<String>()
        .into_bytes()
}

#[test]
fn every_level_and_any_chunking_gives_zlibs_data_and_the_streams_end() {
    let data = sample(30_000, 1);
    for level in 0..=9 {
        let raw = deflate(&data, level);
        for chunk in [1, 13, 4096, raw.len()] {
            let (out, end) = ours(&raw, chunk).unwrap();
            assert!(out == data, "level {level} chunk {chunk}");
            assert_eq!(end.div_ceil(8), raw.len(), "level {level} chunk {chunk}");
        }
    }
}

#[test]
fn long_runs_random_bytes_and_empty_input_decode() {
    let mut rng = fastrand::Rng::with_seed(7);
    let random: Vec<u8> = (0..300_000).map(|_| rng.u8(..)).collect();
    let runs = vec![b'x'; 1_000_000];
    for data in [random, runs, Vec::new(), b"a".to_vec()] {
        for level in [0, 1, 6, 9] {
            let raw = deflate(&data, level);
            assert!(ours(&raw, 8192).unwrap().0 == data, "level {level}");
        }
    }
}

#[test]
fn two_short_literal_codes_are_looked_up_as_one_entry() {
    use crate::archive::huffman::{
        KIND_END, KIND_LITERAL, Table, extra_of, kind_of, len_of, literal_meaning, value_of,
    };
    // Literals 'a'..='o' of 4 bits, 'p' and end-of-block of 5: a complete code.
    let mut lengths = [0u8; 257];
    lengths[usize::from(b'a')..=usize::from(b'o')].fill(4);
    lengths[usize::from(b'p')] = 5;
    lengths[256] = 5;
    let mut table = Table::<1024>::new();
    table.build(&lengths, literal_meaning).unwrap();
    table.pair_literals();
    // Canonical codes, read from the first bit: 'a' is 0000, 'b' 0001 (bits reversed when
    // stored), 'p' 11110, end-of-block 11111.
    let (a, b, p, end) = (0b0000u64, 0b1000u64, 0b01111u64, 0b11111u64);
    let pair = table.lookup(a | b << 4);
    assert_eq!(kind_of(pair), KIND_LITERAL);
    assert_eq!((len_of(pair), extra_of(pair)), (8, 1));
    assert_eq!(value_of(pair), usize::from(b'a') | usize::from(b'b') << 8);
    let pair = table.lookup(p | b << 5);
    assert_eq!((len_of(pair), value_of(pair) >> 8), (9, usize::from(b'b')));
    // A literal before end-of-block stays single, and end-of-block is left as it is.
    let single = table.lookup(b | end << 4);
    assert_eq!(
        (len_of(single), extra_of(single), value_of(single)),
        (4, 0, usize::from(b'b'))
    );
    assert_eq!(kind_of(table.lookup(end)), KIND_END);
}

#[test]
fn hex_text_whose_literals_pair_decodes_as_zlib_decodes_it() {
    // Hashes in hex, like the rows of the benchmark: nearly all literals of 4 or 5 bits.
    let mut rng = fastrand::Rng::with_seed(3);
    let data: Vec<u8> = (0..20_000)
        .map(|i| format!("{i},{:016x}{:016x}\n", rng.u64(..), rng.u64(..)))
        .collect::<String>()
        .into_bytes();
    for level in [1, 6, 9] {
        let raw = deflate(&data, level);
        for chunk in [7, 65_536] {
            assert!(
                ours(&raw, chunk).unwrap().0 == data,
                "level {level} chunk {chunk}"
            );
        }
    }
}

#[test]
fn a_fixed_code_block_decodes() {
    // "abcabcabc" as fixed codes: literals a, b, c, then length 6 at distance 3.
    let raw = deflate(b"abcabcabc", 6);
    assert_eq!(raw[0] & 0b110, 0b010, "zlib used the fixed code");
    assert_eq!(ours(&raw, 1).unwrap().0, b"abcabcabc");
}

#[test]
fn references_before_the_start_and_bad_codes_are_refused() {
    // Fixed block: length 3 (code 257 = 0000001) at distance 1 with no data before it.
    let raw = [0x03, 0x02, 0x00, 0x00];
    assert!(zlib_inflate(&raw).is_err());
    assert_eq!(ours(&raw, 4).unwrap_err().0, "distance too far back");
    // Block type 3.
    assert_eq!(
        ours(&[0x07, 0, 0, 0], 4).unwrap_err().0,
        "invalid block type"
    );
    // Stored block whose length does not match its complement.
    assert!(ours(&[0x01, 0x05, 0x00, 0x00, 0x00], 5).is_err());
}

#[test]
fn a_truncated_stream_is_an_error() {
    let raw = deflate(&sample(5_000, 2), 6);
    for cut in [1, raw.len() / 2, raw.len() - 1] {
        assert!(ours(&raw[..cut], 1000).is_err(), "cut at {cut}");
    }
}

#[test]
fn the_final_blocks_bit_is_cleared_when_asked() {
    let raw = deflate(&sample(100_000, 3), 6);
    let mut input = raw.clone();
    let mut inflate = Inflate::new(true);
    let progress = inflate.run(&mut input, 0, true, &mut |_| {}).unwrap();
    let Progress::Done { bit } = progress else {
        panic!("{progress:?}")
    };
    let changed: Vec<usize> = (0..raw.len()).filter(|&i| raw[i] != input[i]).collect();
    assert_eq!(changed.len(), 1, "exactly one byte changed");
    let flipped = raw[changed[0]] ^ input[changed[0]];
    assert_eq!(flipped.count_ones(), 1);
    assert!(changed[0] * 8 < bit);
    // Without its final block the stream no longer ends.
    assert!(zlib_inflate(&input).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_data_at_any_level_decodes_as_zlib_decodes_it(
        data in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b','), any::<u8>()], 0..20_000),
        level in 0u32..=9,
        chunk in 1usize..5000,
    ) {
        let raw = deflate(&data, level);
        let (out, end) = ours(&raw, chunk).unwrap();
        prop_assert!(out == data);
        prop_assert_eq!(end.div_ceil(8), raw.len());
    }

    #[test]
    fn a_damaged_stream_is_never_accepted_where_zlib_refuses_it(
        seed in any::<u64>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
    ) {
        let mut raw = deflate(&sample(2_000, seed), 6);
        for (at, bit) in flips {
            let i = at.index(raw.len());
            raw[i] ^= 1 << bit;
        }
        if let Ok((out, end)) = ours(&raw, raw.len()) {
            let zlib = zlib_inflate(&raw[..end.div_ceil(8)]);
            prop_assert!(zlib.as_deref().ok() == Some(&out[..]), "zlib: {:?}", zlib.err());
        }
    }
}
