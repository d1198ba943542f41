//! Any bytes as an unloaded gzip part, fed in uneven chunks: the verified pass-through either
//! refuses them, or its raw DEFLATE output, CRC-32 and size are exactly what an independent
//! gzip decoder (flate2) makes of the same bytes. The zip writer then takes the entry.
#![no_main]

use std::io::Read;
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use redshift_export_worker::archive::deflate::PassThrough;
use redshift_export_worker::archive::zip::ZipWriter;

fuzz_target!(|data: &[u8]| {
    let Some((&split, part)) = data.split_first() else { return };
    let mut pass = PassThrough::default();
    let mut raw = Vec::new();
    let chunk = usize::from(split).max(1);
    for piece in part.chunks(chunk) {
        if pass.feed(piece, &mut raw).is_err() {
            return;
        }
    }
    let Ok((crc, csize, size)) = pass.finish() else { return };
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(part)
        .read_to_end(&mut plain)
        .expect("flate2 decodes what the pass-through verified");
    assert_eq!(size, plain.len() as u64);
    assert_eq!(crc, crc32fast::hash(&plain));
    assert_eq!(csize, raw.len() as u64);
    let mut again = Vec::new();
    flate2::read::DeflateDecoder::new(raw.as_slice())
        .read_to_end(&mut again)
        .expect("the raw DEFLATE body inflates");
    assert_eq!(again, plain);

    let mut zip = ZipWriter::new(SystemTime::UNIX_EPOCH);
    let mut out = Vec::new();
    zip.start_entry("part.csv", &mut out);
    zip.write(&raw, &mut out);
    zip.finish_entry(crc, csize, size, &mut out);
    zip.finish(&mut out);
    assert!(out.windows(4).any(|w| w == b"PK\x05\x06"), "an end of central directory");
});
