//! The hand-written ZIP records where ZIP64 is required: more than 65,535 entries (checked by
//! `unzip -t`, Python's zipfile and the `zip` crate reading a real archive) and sizes of 4 GiB
//! and more (checked record by record, and by a real `single` entry of 4.4 GB joined from two
//! gzip parts that `unzip -t`, Python's zipfile and the `zip` crate read back byte for byte).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::time::{Duration, UNIX_EPOCH};

use redshift_export_worker::archive::join::{self, Joiner};
use redshift_export_worker::archive::zip::ZipWriter;

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// `unzip -t` finds the archive at `path` sound.
fn unzip_tests(path: &std::path::Path) {
    let unzip = std::process::Command::new("unzip")
        .arg("-tq")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        unzip.status.success(),
        "unzip -t: {}",
        String::from_utf8_lossy(&unzip.stdout)
    );
}

/// Runs the Python program `code` on the archive at `path`; it must succeed. Its output.
fn python(code: &str, path: &std::path::Path) -> String {
    let run = std::process::Command::new("python3")
        .args(["-c", code])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8_lossy(&run.stdout).trim().to_string()
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn more_than_65535_entries_use_zip64_end_records_that_readers_accept() {
    let mut zip = ZipWriter::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let mut out = Vec::new();
    let count = 70_000u32;
    for i in 0..count {
        let data = format!("{i}\n");
        let compressed = deflate(data.as_bytes());
        zip.start_entry(&format!("part_{i:05}.csv"), &mut out);
        zip.write(&compressed, &mut out);
        zip.finish_entry(
            crc32fast::hash(data.as_bytes()),
            compressed.len() as u64,
            data.len() as u64,
            &mut out,
        );
    }
    zip.finish(&mut out);
    // End of central directory: counts saturated, ZIP64 locator just before it.
    let eocd = out.len() - 22;
    assert_eq!(u32_at(&out, eocd), 0x0605_4b50);
    assert_eq!(u16_at(&out, eocd + 10), 0xFFFF);
    assert_eq!(u32_at(&out, eocd - 20), 0x0706_4b50, "ZIP64 locator");
    let zip64_end = u64_at(&out, eocd - 20 + 8) as usize;
    assert_eq!(u32_at(&out, zip64_end), 0x0606_4b50, "ZIP64 end record");
    assert_eq!(u64_at(&out, zip64_end + 32), u64::from(count));

    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("zip64-{}.zip", std::process::id()));
    std::fs::write(&path, &out).unwrap();
    unzip_tests(&path);
    let python = python(
        "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; \
             names = z.namelist(); print(len(names), z.read(names[-1]).decode().strip())",
        &path,
    );
    assert_eq!(python, format!("{count} {}", count - 1));
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(archive.len(), count as usize);
    for i in [0, 65_535, 65_536, count - 1] {
        let mut entry = archive.by_index(i as usize).unwrap();
        assert_eq!(entry.name(), format!("part_{i:05}.csv"));
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        assert_eq!(text, format!("{i}\n"));
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn sizes_of_4_gib_and_more_go_to_the_zip64_extra_field() {
    let mut zip = ZipWriter::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let mut out = Vec::new();
    zip.start_entry("big.csv", &mut out);
    // The data is not written: only the records are under test.
    let (compressed, uncompressed) = (5u64 << 30, 9u64 << 30);
    zip.finish_entry(0x1234_5678, compressed, uncompressed, &mut out);
    let descriptor = out.len() - 24;
    assert_eq!(u32_at(&out, descriptor), 0x0807_4b50);
    assert_eq!(
        (u64_at(&out, descriptor + 8), u64_at(&out, descriptor + 16)),
        (compressed, uncompressed),
        "8-byte sizes"
    );
    let cd = out.len();
    zip.finish(&mut out);
    assert_eq!(u32_at(&out, cd), 0x0201_4b50);
    assert_eq!(
        (u32_at(&out, cd + 20), u32_at(&out, cd + 24)),
        (u32::MAX, u32::MAX),
        "sizes escaped"
    );
    let name_len = u16_at(&out, cd + 28) as usize;
    let extra = cd + 46 + name_len;
    assert_eq!(u16_at(&out, extra), 0x0001, "ZIP64 extra field");
    assert_eq!(
        u16_at(&out, extra + 2),
        16,
        "uncompressed and compressed size only"
    );
    assert_eq!(
        (u64_at(&out, extra + 4), u64_at(&out, extra + 12)),
        (uncompressed, compressed)
    );
    // The local header always announces ZIP64 (version 4.5, sizes escaped, both in the extra).
    assert_eq!(u32_at(&out, 0), 0x0403_4b50);
    assert_eq!(u16_at(&out, 4), 45);
    assert_eq!((u32_at(&out, 18), u32_at(&out, 22)), (u32::MAX, u32::MAX));
}

/// The rows the 4 GiB test repeats; the Python check below builds the same bytes.
fn pattern() -> Vec<u8> {
    (0..1000)
        .map(|i| format!("{i},row {i} of the pattern\n"))
        .collect::<String>()
        .into_bytes()
}

#[test]
fn a_single_entry_above_4_gib_joined_from_gzip_parts_reads_back_byte_for_byte() {
    const REPEATS: usize = 85_000; // per part: 2.2 GB, so both parts hold more than 4 GiB
    let block = pattern();
    let parts: Vec<Vec<u8>> = (0..2)
        .map(|_| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            for _ in 0..REPEATS {
                e.write_all(&block).unwrap();
            }
            e.finish().unwrap()
        })
        .collect();
    let header = b"id,text\n";
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("zip64-single-{}.zip", std::process::id()));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut zip = ZipWriter::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let (mut out, mut raw) = (Vec::new(), Vec::new());
    zip.start_entry("export.csv", &mut out);
    let mut crc = crc32fast::Hasher::new();
    crc.update(header);
    let mut compressed = join::stored(header, &mut raw);
    let mut size = header.len() as u64;
    for part in &parts {
        let mut joiner = Joiner::default();
        for chunk in part.chunks(1 << 20) {
            joiner.feed(chunk, &mut raw).unwrap();
            zip.write(&raw, &mut out);
            raw.clear();
            file.write_all(&out).unwrap();
            out.clear();
        }
        let joined = joiner.finish(&mut raw).unwrap();
        crc.combine(&joined.crc);
        size += joined.size;
        compressed += joined.compressed;
    }
    raw.extend_from_slice(&join::LAST_BLOCK);
    zip.write(&raw, &mut out);
    zip.finish_entry(crc.finalize(), compressed + 2, size, &mut out);
    zip.finish(&mut out);
    file.write_all(&out).unwrap();
    file.flush().unwrap();
    drop(file);
    assert_eq!(size, (header.len() + 2 * REPEATS * block.len()) as u64);
    assert!(size > 1 << 32);

    unzip_tests(&path);
    let python = python(
        "import sys, zipfile\n\
             block = ''.join(f'{i},row {i} of the pattern\\n' for i in range(1000)).encode()\n\
             z = zipfile.ZipFile(sys.argv[1]); info = z.infolist()[0]\n\
             f = z.open(info); assert f.read(8) == b'id,text\\n'\n\
             n = 0\n\
             while chunk := f.read(len(block) * 40):\n\
             \x20   assert chunk == block * (len(chunk) // len(block)), n\n\
             \x20   n += len(chunk)\n\
             print(info.file_size, n)",
        &path,
    );
    assert_eq!(python, format!("{size} {}", size - header.len() as u64));

    // The zip crate checks the entry's CRC-32 when its end is read.
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
    let mut entry = archive.by_index(0).unwrap();
    assert_eq!((entry.name(), entry.size()), ("export.csv", size));
    let mut head = [0u8; 8];
    entry.read_exact(&mut head).unwrap();
    assert_eq!(&head, header);
    // Reads end anywhere: each is compared with the pattern from the offset it starts at.
    let expected = block.repeat(41);
    let mut chunk = vec![0u8; block.len() * 40];
    let mut read = 0u64;
    loop {
        let n = entry.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        let at = (read % block.len() as u64) as usize;
        assert!(chunk[..n] == expected[at..at + n], "bytes from {read}");
        read += n as u64;
    }
    assert_eq!(read, size - header.len() as u64);
    drop(entry);
    std::fs::remove_file(&path).unwrap();
}
