//! Tests of the gzip pass-through, inflation and recompression.

use super::*;
use std::io::Read;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn inflate(raw: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    flate2::read::DeflateDecoder::new(raw)
        .read_to_end(&mut v)
        .unwrap();
    v
}

fn sample(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| format!("{i},customer {i},\"q\"\n"))
        .collect::<String>()
        .into_bytes()
}

#[test]
fn pass_through_copies_the_body_and_verifies_it_in_any_chunking() {
    let data = sample(20_000);
    let gz = gzip(&data);
    for chunk in [1, 7, 4096, gz.len()] {
        let mut p = PassThrough::default();
        let mut out = Vec::new();
        for piece in gz.chunks(chunk) {
            p.feed(piece, &mut out).unwrap();
        }
        let mut again = Vec::new();
        let edits = p.edits();
        let mut apply = edits.apply();
        for piece in gz.chunks(chunk) {
            apply.feed(piece, &mut again);
        }
        assert_eq!(again, out, "the recorded changes give the body");
        let (crc, csize, usize) = p.finish().unwrap();
        assert_eq!(crc, crc32fast::hash(&data));
        assert_eq!(usize, data.len() as u64);
        assert_eq!(csize, out.len() as u64);
        assert_eq!(inflate(&out), data, "chunk {chunk}");
    }
}

#[test]
fn pass_through_handles_optional_header_fields() {
    let data = b"hello\n".to_vec();
    let mut gz = flate2::GzBuilder::new()
        .filename("x.csv")
        .comment("c")
        .extra(vec![1, 2, 3])
        .write(Vec::new(), flate2::Compression::fast());
    gz.write_all(&data).unwrap();
    let gz = gz.finish().unwrap();
    let mut p = PassThrough::default();
    let mut out = Vec::new();
    p.feed(&gz, &mut out).unwrap();
    assert_eq!(p.finish().unwrap().2, 6);
    assert_eq!(inflate(&out), data);
}

#[test]
fn the_header_crc_is_checked() {
    // A gzip file with FHCRC and an empty name around an empty body: 03 00 is an empty
    // final fixed-Huffman block; CRC-32 and size of nothing are zero.
    let mut gz = vec![0x1f, 0x8b, 8, 0x0a, 0, 0, 0, 0, 0, 0, 0];
    let crc16 = (crc32fast::hash(&gz) & 0xffff) as u16;
    gz.extend(crc16.to_le_bytes());
    gz.extend([3, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let mut p = PassThrough::default();
    p.feed(&gz, &mut Vec::new()).unwrap();
    assert_eq!(p.finish().unwrap(), (0, 2, 0));
    // Found by the gzip_part fuzz target: a wrong header CRC was accepted, which flate2
    // (rightly) refuses.
    gz[11] ^= 0xff;
    assert!(matches!(
        PassThrough::default().feed(&gz, &mut Vec::new()),
        Err(PassError::Corrupt(_))
    ));
}

#[test]
fn pass_through_rejects_multi_member_and_corruption() {
    let mut two = gzip(b"a\n");
    two.extend(gzip(b"b\n"));
    let mut p = PassThrough::default();
    assert_eq!(p.feed(&two, &mut Vec::new()), Err(PassError::MultiMember));

    let mut bad = gzip(&sample(100));
    let n = bad.len();
    bad[n - 8] ^= 0xff; // CRC in the trailer
    let mut p = PassThrough::default();
    assert!(matches!(
        p.feed(&bad, &mut Vec::new()),
        Err(PassError::Corrupt(_))
    ));

    let gz = gzip(&sample(100));
    let mut p = PassThrough::default();
    p.feed(&gz[..gz.len() - 3], &mut Vec::new()).unwrap();
    assert!(matches!(p.finish(), Err(PassError::Corrupt(_))));
    assert!(matches!(
        PassThrough::default().feed(b"not gzip at all", &mut Vec::new()),
        Err(PassError::Corrupt(_))
    ));
}

#[test]
fn recompressor_joins_multi_member_input() {
    let mut gz = gzip(b"one\n");
    gz.extend(gzip(b"two\n"));
    let mut g = Gunzip::default();
    let mut r = Recompressor::new(6);
    let mut out = Vec::new();
    g.feed(&gz, |plain| r.write(plain)).unwrap();
    g.finish(|plain| r.write(plain)).unwrap();
    r.drain_into(&mut out);
    let (crc, csize, usize) = r.finish_into(&mut out).unwrap();
    assert_eq!(inflate(&out), b"one\ntwo\n");
    assert_eq!(
        (crc, csize, usize),
        (crc32fast::hash(b"one\ntwo\n"), out.len() as u64, 8)
    );
}
