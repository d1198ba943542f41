//! Any bytes as an unloaded gzip part joined into a `single` entry after a header: the joiner
//! either refuses them, or zlib (flate2) reads the joined stream back as the header followed
//! by exactly what a gzip decoder makes of the part, with the CRC-32 and size the joiner
//! recorded.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use redshift_export_worker::archive::join::{self, Joiner};

fuzz_target!(|data: &[u8]| {
    let Some((&split, part)) = data.split_first() else { return };
    let header = b"id,name\n";
    let mut raw = Vec::new();
    let mut compressed = join::stored(header, &mut raw);
    let mut joiner = Joiner::default();
    for piece in part.chunks(usize::from(split).max(1)) {
        if joiner.feed(piece, &mut raw).is_err() {
            return;
        }
    }
    let Ok(joined) = joiner.finish(&mut raw) else { return };
    compressed += joined.compressed;
    raw.extend_from_slice(&join::LAST_BLOCK);
    assert_eq!(compressed + 2, raw.len() as u64);

    let mut plain = Vec::new();
    flate2::read::MultiGzDecoder::new(part)
        .read_to_end(&mut plain)
        .expect("flate2 decodes what the joiner verified");
    let mut want = header.to_vec();
    want.extend_from_slice(&plain);
    let mut back = Vec::new();
    flate2::read::DeflateDecoder::new(raw.as_slice())
        .read_to_end(&mut back)
        .expect("the joined stream inflates");
    assert!(back == want, "the joined stream reads back as header + part");
    assert_eq!(joined.size, plain.len() as u64);
    let mut crc = crc32fast::Hasher::new();
    crc.update(header);
    crc.combine(&joined.crc);
    assert_eq!(crc.finalize(), crc32fast::hash(&want));
});
