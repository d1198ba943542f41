//! Any bytes as raw DEFLATE data, fed in uneven chunks: the archive's own decoder either
//! refuses them, or zlib (flate2) decodes the same stream to exactly the same data — the
//! decoder is never more lenient than zlib, and never wrong.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use redshift_export_worker::archive::inflate::{Inflate, Progress};

fuzz_target!(|data: &[u8]| {
    let Some((&split, raw)) = data.split_first() else { return };
    let chunk = usize::from(split).max(1) * 7;
    let mut inflate = Inflate::new(false);
    let (mut pending, mut out) = (Vec::new(), Vec::new());
    let (mut bit, mut consumed) = (0usize, 0usize);
    let mut pieces = raw.chunks(chunk).peekable();
    let end = loop {
        let Some(piece) = pieces.next() else { return };
        pending.extend_from_slice(piece);
        let complete = pieces.peek().is_none();
        match inflate.run(&mut pending, bit, complete, &mut |d| out.extend_from_slice(d)) {
            Err(_) => return,
            Ok(Progress::NeedInput { bit: b }) => {
                pending.drain(..b / 8);
                consumed += b / 8;
                bit = b % 8;
            }
            Ok(Progress::Done { bit: b }) => break consumed * 8 + b,
        }
    };
    let mut zlib = Vec::new();
    flate2::read::DeflateDecoder::new(&raw[..end.div_ceil(8)])
        .read_to_end(&mut zlib)
        .expect("zlib decodes what the decoder accepted");
    assert!(zlib == out, "the decoder and zlib disagree");
    assert_eq!(inflate.total_out(), out.len() as u64);
});
