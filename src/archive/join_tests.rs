//! Joined streams read back by zlib (flate2) exactly as the parts' data, header first.

use super::*;
use crate::archive::edits::Apply;
use proptest::prelude::*;
use std::io::{Read, Write};

fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib_inflate(raw: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    flate2::read::DeflateDecoder::new(raw)
        .read_to_end(&mut v)
        .unwrap();
    v
}

/// Joins `header` and `parts` fed in `chunk`-byte pieces; returns the stream and its CRC.
fn join(header: &[u8], parts: &[Vec<u8>], chunk: usize) -> Result<(Vec<u8>, u32, u64), JoinError> {
    let mut out = Vec::new();
    let mut crc = crc32fast::Hasher::new();
    crc.update(header);
    let mut compressed = stored(header, &mut out);
    let mut size = header.len() as u64;
    for part in parts {
        let mut joiner = Joiner::default();
        for piece in part.chunks(chunk) {
            joiner.feed(piece, &mut out)?;
        }
        let joined = joiner.finish(&mut out)?;
        // The part with the recorded changes is what was written.
        let mut again = Vec::new();
        let mut apply = joined.edits.apply();
        for piece in part.chunks(chunk) {
            apply.feed(piece, &mut again);
        }
        apply.finish(&mut again);
        let mut recording = Joiner::recording();
        let mut scratch = Vec::new();
        // Copied as the archive's writer does while a part is decoded: the settled bytes with
        // the changes known so far, the rest once the part has ended.
        let (mut early, mut copied, mut streamed) = (Apply::default(), 0, Vec::new());
        for piece in part.chunks(chunk) {
            recording.feed(piece, &mut scratch).unwrap();
            let settled = usize::try_from(recording.settled()).unwrap();
            early.update(recording.edits());
            early.feed(&part[copied..settled], &mut streamed);
            copied = settled;
        }
        let recorded = recording.finish(&mut scratch).unwrap();
        early.update(&recorded.edits);
        early.feed(&part[copied..], &mut streamed);
        early.finish(&mut streamed);
        assert!(
            streamed == again,
            "the settled bytes copied early change as the whole part does"
        );
        assert_eq!(
            recorded.edits, joined.edits,
            "recording alone gives the same changes"
        );
        assert_eq!(recorded.compressed, joined.compressed);
        assert_eq!(recorded.crc.finalize(), joined.crc.clone().finalize());
        assert_eq!(joined.length, part.len() as u64);
        assert_eq!(again.len() as u64, joined.compressed);
        assert!(
            again[..] == out[out.len() - again.len()..],
            "the changes reproduce the part's data"
        );
        crc.combine(&joined.crc);
        size += joined.size;
        compressed += joined.compressed;
    }
    out.extend_from_slice(&LAST_BLOCK);
    assert_eq!(compressed + 2, out.len() as u64, "compressed bytes counted");
    Ok((out, crc.finalize(), size))
}

fn rows(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|i| format!("{i},{},{:x}\n", rng.u32(..), rng.u64(..)))
        .collect::<String>()
        .into_bytes()
}

#[test]
fn parts_at_every_level_join_into_their_concatenation() {
    let header = b"id,a,b\n".to_vec();
    let data: Vec<Vec<u8>> = (0..10).map(|i| rows(3_000 + i * 100, i as u64)).collect();
    let parts: Vec<Vec<u8>> = data
        .iter()
        .enumerate()
        .map(|(i, d)| gzip(d, i as u32))
        .collect();
    let mut all = header.clone();
    data.iter().for_each(|d| all.extend_from_slice(d));
    for chunk in [1, 999, 1 << 20] {
        let (stream, crc, size) = join(&header, &parts, chunk).unwrap();
        assert!(zlib_inflate(&stream) == all, "chunk {chunk}");
        assert_eq!(crc, crc32fast::hash(&all));
        assert_eq!(size, all.len() as u64);
    }
}

#[test]
fn multi_member_empty_and_named_parts_join() {
    let mut multi = gzip(b"one\n", 6);
    multi.extend(gzip(b"", 6));
    multi.extend(gzip(b"two\n", 1));
    let mut named = flate2::GzBuilder::new()
        .filename("0000_part_00")
        .comment("c")
        .extra(vec![1, 2])
        .write(Vec::new(), flate2::Compression::best());
    named.write_all(b"three\n").unwrap();
    let parts = vec![multi, gzip(b"", 0), named.finish().unwrap()];
    let (stream, crc, _) = join(b"", &parts, 3).unwrap();
    assert_eq!(zlib_inflate(&stream), b"one\ntwo\nthree\n");
    assert_eq!(crc, crc32fast::hash(b"one\ntwo\nthree\n"));
    // No parts and no header: an empty stream.
    assert_eq!(zlib_inflate(&join(b"", &[], 1).unwrap().0), b"");
}

#[test]
fn a_header_longer_than_one_stored_block_joins() {
    let header = vec![b'h'; 200_000];
    let (stream, _, _) = join(&header, &[gzip(b"x\n", 6)], 4096).unwrap();
    let mut want = header.clone();
    want.extend_from_slice(b"x\n");
    assert!(zlib_inflate(&stream) == want);
}

#[test]
fn damaged_truncated_or_trailing_data_is_refused() {
    let good = gzip(&rows(2_000, 9), 6);
    let mut bad_crc = good.clone();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 1;
    let mut bad_size = good.clone();
    bad_size[n - 1] ^= 1;
    let mut garbage = good.clone();
    garbage.extend_from_slice(b"\0\0");
    for (what, part) in [
        ("crc", bad_crc),
        ("size", bad_size),
        ("garbage", garbage),
        ("truncated", good[..n - 3].to_vec()),
        ("empty", Vec::new()),
        ("not gzip", b"id,a\n1,2\n".to_vec()),
    ] {
        assert!(join(b"", &[part], 100).is_err(), "{what}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Small parts end at every bit position, so each way of reaching a byte boundary is used.
    #[test]
    fn any_parts_join_into_their_concatenation(
        data in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..5),
        levels in proptest::collection::vec(0u32..=9, 5),
        header in proptest::collection::vec(any::<u8>(), 0..50),
        chunk in 1usize..700,
    ) {
        let parts: Vec<Vec<u8>> = data.iter().zip(&levels).map(|(d, l)| gzip(d, *l)).collect();
        let (stream, crc, size) = join(&header, &parts, chunk).unwrap();
        let mut all = header.clone();
        data.iter().for_each(|d| all.extend_from_slice(d));
        prop_assert_eq!(zlib_inflate(&stream), all.clone());
        prop_assert_eq!(crc, crc32fast::hash(&all));
        prop_assert_eq!(size, all.len() as u64);
    }
}

#[test]
fn large_parts_join_into_their_concatenation() {
    let data: Vec<Vec<u8>> = (0..3).map(|i| rows(60_000 + i * 7, i as u64)).collect();
    let parts: Vec<Vec<u8>> = data.iter().map(|d| gzip(d, 6)).collect();
    let all: Vec<u8> = data.concat();
    for chunk in [8192, 1 << 20] {
        let (stream, crc, size) = join(b"", &parts, chunk).unwrap();
        let back = zlib_inflate(&stream);
        let first = back.iter().zip(&all).position(|(a, b)| a != b);
        assert!(
            back == all,
            "chunk {chunk}: {} vs {} first diff {first:?}",
            back.len(),
            all.len()
        );
        assert_eq!(crc, crc32fast::hash(&all));
        assert_eq!(size, all.len() as u64);
    }
}
