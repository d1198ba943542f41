//! A streaming ZIP writer for DEFLATE entries whose data arrives already compressed, and for
//! stored entries (method 0: Parquet files, which compress inside).
//!
//! The `zip` crate cannot write pre-compressed data with a CRC and sizes supplied afterwards,
//! which the pass-through path needs, so the records are written here (PKWARE's APPNOTE.TXT
//! 6.3). Every entry streams: the local header sets flag bit 3 and a
//! ZIP64 extra field with zero sizes, and the data descriptor that follows the data always has
//! 8-byte sizes. The central directory uses ZIP64 fields only where a value needs them, and the
//! ZIP64 end records are added when the entry count, directory size or offset needs them.

use std::time::{SystemTime, UNIX_EPOCH};

const LOCAL_HEADER: u32 = 0x0403_4b50;
const DATA_DESCRIPTOR: u32 = 0x0807_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const ZIP64_END: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const END: u32 = 0x0605_4b50;

/// Flag bit 3 (sizes in the data descriptor) and bit 11 (UTF-8 names).
const FLAGS: u16 = 0x0008 | 0x0800;

/// How an entry's data is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Method 0: the data as it is.
    Stored,
    /// Method 8.
    Deflate,
}

impl Method {
    fn code(self) -> u16 {
        match self {
            Method::Stored => 0,
            Method::Deflate => 8,
        }
    }
}
/// ZIP64 needs version 4.5.
const VERSION_NEEDED: u16 = 45;
/// Made by: Unix (3) so the external attributes carry a file mode; version 4.5.
const VERSION_MADE_BY: u16 = (3 << 8) | 45;
/// Regular file, mode 0644.
const EXTERNAL_ATTRIBUTES: u32 = 0o100_644 << 16;
const U32_MAX: u64 = 0xFFFF_FFFF;

struct CentralEntry {
    name: String,
    method: Method,
    crc: u32,
    compressed: u64,
    uncompressed: u64,
    offset: u64,
}

/// An entry as written: what a receiver checks what it unpacked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub crc32: u32,
    /// Uncompressed size.
    pub bytes: u64,
}

/// Writes ZIP records into caller-provided buffers, tracking offsets.
pub struct ZipWriter {
    offset: u64,
    entries: Vec<CentralEntry>,
    /// Name, method and local-header offset of the entry being written.
    open: Option<(String, Method, u64)>,
    dos_time: u16,
    dos_date: u16,
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

impl ZipWriter {
    /// `modified` becomes every entry's timestamp (UTC).
    pub fn new(modified: SystemTime) -> Self {
        let (dos_date, dos_time) = dos_datetime(modified);
        ZipWriter {
            offset: 0,
            entries: Vec::new(),
            open: None,
            dos_time,
            dos_date,
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, record: &[u8]) {
        out.extend_from_slice(record);
        self.offset += record.len() as u64;
    }

    /// Starts a DEFLATE entry.
    pub fn start_entry(&mut self, name: &str, out: &mut Vec<u8>) {
        self.start(name, Method::Deflate, out);
    }

    /// Starts an entry whose data is written as it is (method 0); its CRC-32 and size follow
    /// the data in the descriptor like any other entry's.
    pub fn start_stored(&mut self, name: &str, out: &mut Vec<u8>) {
        self.start(name, Method::Stored, out);
    }

    fn start(&mut self, name: &str, method: Method, out: &mut Vec<u8>) {
        debug_assert!(self.open.is_none(), "previous entry not finished");
        let mut rec = Vec::with_capacity(30 + name.len() + 20);
        put32(&mut rec, LOCAL_HEADER);
        put16(&mut rec, VERSION_NEEDED);
        put16(&mut rec, FLAGS);
        put16(&mut rec, method.code());
        put16(&mut rec, self.dos_time);
        put16(&mut rec, self.dos_date);
        put32(&mut rec, 0); // CRC-32: in the data descriptor
        put32(&mut rec, U32_MAX as u32); // sizes: in the ZIP64 extra field / data descriptor
        put32(&mut rec, U32_MAX as u32);
        put16(&mut rec, name.len() as u16);
        put16(&mut rec, 20);
        rec.extend_from_slice(name.as_bytes());
        put16(&mut rec, 0x0001); // ZIP64 extra: both sizes, as a local header must hold
        put16(&mut rec, 16);
        put64(&mut rec, 0);
        put64(&mut rec, 0);
        self.open = Some((name.to_string(), method, self.offset));
        self.emit(out, &rec);
    }

    /// Appends compressed data of the open entry.
    pub fn write(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.emit(out, data);
    }

    /// Ends the open entry with its verified CRC-32 and sizes.
    pub fn finish_entry(
        &mut self,
        crc: u32,
        compressed: u64,
        uncompressed: u64,
        out: &mut Vec<u8>,
    ) {
        let Some((name, method, offset)) = self.open.take() else {
            debug_assert!(false, "no open entry");
            return;
        };
        let mut rec = Vec::with_capacity(24);
        put32(&mut rec, DATA_DESCRIPTOR);
        put32(&mut rec, crc);
        put64(&mut rec, compressed);
        put64(&mut rec, uncompressed);
        self.emit(out, &rec);
        debug_assert!(method == Method::Deflate || compressed == uncompressed);
        self.entries.push(CentralEntry {
            name,
            method,
            crc,
            compressed,
            uncompressed,
            offset,
        });
    }

    /// One entry's central directory header, with a ZIP64 extra field for whatever does not
    /// fit in 32 bits.
    fn central_header(&self, e: &CentralEntry, cd: &mut Vec<u8>) {
        let cd = &mut *cd;
        let mut extra = Vec::new();
        let big_u = e.uncompressed >= U32_MAX;
        let big_c = e.compressed >= U32_MAX;
        let big_o = e.offset >= U32_MAX;
        if big_u {
            put64(&mut extra, e.uncompressed);
        }
        if big_c {
            put64(&mut extra, e.compressed);
        }
        if big_o {
            put64(&mut extra, e.offset);
        }
        put32(cd, CENTRAL_HEADER);
        put16(cd, VERSION_MADE_BY);
        put16(cd, VERSION_NEEDED);
        put16(cd, FLAGS);
        put16(cd, e.method.code());
        put16(cd, self.dos_time);
        put16(cd, self.dos_date);
        put32(cd, e.crc);
        put32(cd, e.compressed.min(U32_MAX) as u32);
        put32(cd, e.uncompressed.min(U32_MAX) as u32);
        put16(cd, e.name.len() as u16);
        put16(
            cd,
            if extra.is_empty() {
                0
            } else {
                extra.len() as u16 + 4
            },
        );
        put16(cd, 0); // comment
        put16(cd, 0); // disk
        put16(cd, 0); // internal attributes
        put32(cd, EXTERNAL_ATTRIBUTES);
        put32(cd, e.offset.min(U32_MAX) as u32);
        cd.extend_from_slice(e.name.as_bytes());
        if !extra.is_empty() {
            put16(cd, 0x0001);
            put16(cd, extra.len() as u16);
            cd.extend_from_slice(&extra);
        }
    }

    /// Writes the central directory and end records; returns the entries written.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Vec<Entry> {
        let cd_offset = self.offset;
        let mut cd = Vec::new();
        for e in &self.entries {
            self.central_header(e, &mut cd);
        }
        let cd_size = cd.len() as u64;
        self.emit(out, &cd);
        let count = self.entries.len() as u64;
        let zip64 = count > 0xFFFF || cd_size >= U32_MAX || cd_offset >= U32_MAX;
        let mut end = Vec::new();
        if zip64 {
            let zip64_end_offset = self.offset;
            put32(&mut end, ZIP64_END);
            put64(&mut end, 44);
            put16(&mut end, VERSION_MADE_BY);
            put16(&mut end, VERSION_NEEDED);
            put32(&mut end, 0);
            put32(&mut end, 0);
            put64(&mut end, count);
            put64(&mut end, count);
            put64(&mut end, cd_size);
            put64(&mut end, cd_offset);
            put32(&mut end, ZIP64_LOCATOR);
            put32(&mut end, 0);
            put64(&mut end, zip64_end_offset);
            put32(&mut end, 1);
        }
        put32(&mut end, END);
        put16(&mut end, 0);
        put16(&mut end, 0);
        put16(&mut end, if zip64 { 0xFFFF } else { count as u16 });
        put16(&mut end, if zip64 { 0xFFFF } else { count as u16 });
        put32(
            &mut end,
            if zip64 {
                U32_MAX as u32
            } else {
                cd_size as u32
            },
        );
        put32(
            &mut end,
            if zip64 {
                U32_MAX as u32
            } else {
                cd_offset as u32
            },
        );
        put16(&mut end, 0);
        self.emit(out, &end);
        self.entries
            .into_iter()
            .map(|e| Entry {
                name: e.name,
                crc32: e.crc,
                bytes: e.uncompressed,
            })
            .collect()
    }
}

/// MS-DOS date and time (local time is unknowable here; UTC is used), clamped to 1980.
fn dos_datetime(t: SystemTime) -> (u16, u16) {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .max(315_532_800);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let date = (((year - 1980).clamp(0, 127) as u16) << 9) | ((month as u16) << 5) | day as u16;
    let time = (((rem / 3600) as u16) << 11)
        | ((((rem % 3600) / 60) as u16) << 5)
        | ((rem % 60) / 2) as u16;
    (date, time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Reads the archive back with an independent reader: flate2 for the data, our own walk of
    /// the central directory; Python's zipfile and `unzip -t` check it in the end-to-end tests.
    #[test]
    fn entries_round_trip() {
        let mut zip = ZipWriter::new(UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000));
        let mut out = Vec::new();
        let files: [(&str, &[u8]); 2] = [("a.csv", b"id,name\n1,x\n"), ("dir/b.csv", b"")];
        for (name, data) in files {
            zip.start_entry(name, &mut out);
            let compressed = deflate(data);
            zip.write(&compressed, &mut out);
            zip.finish_entry(
                crc32fast::hash(data),
                compressed.len() as u64,
                data.len() as u64,
                &mut out,
            );
        }
        zip.finish(&mut out);

        // End of central directory: 2 entries.
        let eocd = &out[out.len() - 22..];
        assert_eq!(u32::from_le_bytes(eocd[0..4].try_into().unwrap()), END);
        assert_eq!(u16::from_le_bytes(eocd[10..12].try_into().unwrap()), 2);
        let cd_offset = u32::from_le_bytes(eocd[16..20].try_into().unwrap()) as usize;
        let mut p = cd_offset;
        for (name, data) in files {
            assert_eq!(
                u32::from_le_bytes(out[p..p + 4].try_into().unwrap()),
                CENTRAL_HEADER
            );
            let crc = u32::from_le_bytes(out[p + 16..p + 20].try_into().unwrap());
            let csize = u32::from_le_bytes(out[p + 20..p + 24].try_into().unwrap()) as usize;
            let name_len = u16::from_le_bytes(out[p + 28..p + 30].try_into().unwrap()) as usize;
            let local = u32::from_le_bytes(out[p + 42..p + 46].try_into().unwrap()) as usize;
            assert_eq!(&out[p + 46..p + 46 + name_len], name.as_bytes());
            assert_eq!(crc, crc32fast::hash(data));
            let data_start = local + 30 + name_len + 20;
            let mut inflated = Vec::new();
            flate2::read::DeflateDecoder::new(&out[data_start..data_start + csize])
                .read_to_end(&mut inflated)
                .unwrap();
            assert_eq!(inflated, data);
            p += 46 + name_len;
        }
    }

    /// Stored and DEFLATE entries side by side, read back by the `zip` crate.
    #[test]
    fn stored_entries_read_back() {
        let mut zip = ZipWriter::new(UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000));
        let mut out = Vec::new();
        let stored: &[u8] = b"PAR1 not compressed at all PAR1";
        zip.start_stored("0000_part_00.parquet", &mut out);
        zip.write(stored, &mut out);
        let len = stored.len() as u64;
        zip.finish_entry(crc32fast::hash(stored), len, len, &mut out);
        let text: &[u8] = b"id\n1\n";
        let compressed = deflate(text);
        zip.start_entry("b.csv", &mut out);
        zip.write(&compressed, &mut out);
        zip.finish_entry(
            crc32fast::hash(text),
            compressed.len() as u64,
            text.len() as u64,
            &mut out,
        );
        let written = zip.finish(&mut out);
        assert_eq!(written.len(), 2);

        let mut archive = ::zip::ZipArchive::new(std::io::Cursor::new(out)).unwrap();
        for (i, (name, data, method)) in [
            (
                "0000_part_00.parquet",
                stored,
                ::zip::CompressionMethod::Stored,
            ),
            ("b.csv", text, ::zip::CompressionMethod::Deflated),
        ]
        .into_iter()
        .enumerate()
        {
            let mut file = archive.by_index(i).unwrap();
            assert_eq!((file.name(), file.compression()), (name, method));
            let mut read = Vec::new();
            file.read_to_end(&mut read).unwrap();
            assert_eq!(read, data);
        }
    }

    #[test]
    fn dos_datetime_matches_known_values() {
        // 2023-11-14 22:13:20 UTC
        let (date, time) = dos_datetime(UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000));
        assert_eq!(date >> 9, 2023 - 1980);
        assert_eq!((date >> 5) & 0xF, 11);
        assert_eq!(date & 0x1F, 14);
        assert_eq!(
            (time >> 11, (time >> 5) & 0x3F, (time & 0x1F) * 2),
            (22, 13, 20)
        );
    }
}
