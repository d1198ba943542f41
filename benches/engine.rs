//! The archive engine alone, on generated UNLOAD-like gzip parts held in memory: how fast each
//! way of building the zip entry runs, against inflating the same parts and throwing the data
//! away (the floor for anything that verifies). Run by `scripts/bench`; by hand:
//! `cargo bench --bench engine -- [MiB of CSV] [parts]`.

use std::io::Write;
use std::time::{Duration, Instant};

use redshift_export_worker::archive::deflate::{PassThrough, Recompressor};
use redshift_export_worker::archive::inflate::{Inflate, Progress};
use redshift_export_worker::archive::join::{self, Joiner};
use redshift_export_worker::archive::zip::ZipWriter;

/// Rows like a real export's: ids, hashes, amounts, timestamps, free text (compresses ~3:1).
fn rows(bytes: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = Vec::with_capacity(bytes + 200);
    let mut id = seed * 1_000_000_000;
    while out.len() < bytes {
        id += 1;
        let _ = writeln!(
            out,
            "{id},{:016x}{:016x},{}.{:02},2026-{:02}-{:02} {:02}:{:02}:{:02},customer {} of region {}",
            rng.u64(..),
            rng.u64(..),
            rng.u32(..100_000),
            rng.u8(..100),
            rng.u8(1..13),
            rng.u8(1..29),
            rng.u8(..24),
            rng.u8(..60),
            rng.u8(..60),
            rng.u32(..50_000),
            rng.u8(..20),
        );
    }
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

/// CPU time of this process so far.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

struct Run {
    name: &'static str,
    wall: Duration,
    cpu: Duration,
}

fn measure(name: &'static str, f: impl FnOnce() -> u64) -> (Run, u64) {
    let (w, c) = (Instant::now(), cpu());
    let out = f();
    (
        Run {
            name,
            wall: w.elapsed(),
            cpu: cpu() - c,
        },
        out,
    )
}

fn inflate_zlib(parts: &[Vec<u8>]) -> u64 {
    let mut n = 0;
    let mut buf = vec![0u8; 256 * 1024];
    for p in parts {
        let mut d = flate2::read::MultiGzDecoder::new(&p[..]);
        while let Ok(k) = std::io::Read::read(&mut d, &mut buf) {
            if k == 0 {
                break;
            }
            n += k as u64;
        }
    }
    n
}

fn inflate_ours(parts: &[Vec<u8>]) -> u64 {
    let mut n = 0u64;
    for p in parts {
        // Skip the 10-byte header flate2 writes; decode the body in 64 KiB pieces.
        let mut inflate = Inflate::new(false);
        let mut pending = Vec::new();
        let mut bit = 0;
        for chunk in p[10..].chunks(64 * 1024) {
            pending.extend_from_slice(chunk);
            match inflate.run(&mut pending, bit, false, &mut |d| n += d.len() as u64) {
                Ok(Progress::NeedInput { bit: b }) => {
                    pending.drain(..b / 8);
                    bit = b % 8;
                }
                _ => break,
            }
        }
    }
    n
}

fn zip_parts(parts: &[Vec<u8>]) -> u64 {
    let mut zip = ZipWriter::new(std::time::SystemTime::now());
    let (mut out, mut raw, mut total) = (Vec::new(), Vec::new(), 0);
    for (i, p) in parts.iter().enumerate() {
        zip.start_entry(&format!("{i:04}_part_00.csv"), &mut out);
        let mut pass = PassThrough::default();
        for chunk in p.chunks(64 * 1024) {
            let _ = pass.feed(chunk, &mut raw);
            zip.write(&raw, &mut out);
            raw.clear();
            total += out.len() as u64;
            out.clear();
        }
        if let Ok((crc, c, u)) = pass.finish() {
            zip.finish_entry(crc, c, u, &mut out);
        }
    }
    zip.finish(&mut out);
    total + out.len() as u64
}

fn zip_single(parts: &[Vec<u8>]) -> u64 {
    let mut zip = ZipWriter::new(std::time::SystemTime::now());
    let (mut out, mut raw) = (Vec::new(), Vec::new());
    zip.start_entry("export.csv", &mut out);
    let mut crc = crc32fast::Hasher::new();
    let header = b"id,hash,amount,at,note\n";
    crc.update(header);
    let mut compressed = join::stored(header, &mut raw);
    let mut size = header.len() as u64;
    let mut total = 0;
    for p in parts {
        let mut joiner = Joiner::default();
        for chunk in p.chunks(64 * 1024) {
            let _ = joiner.feed(chunk, &mut raw);
            zip.write(&raw, &mut out);
            raw.clear();
            total += out.len() as u64;
            out.clear();
        }
        if let Ok(j) = joiner.finish(&mut raw) {
            crc.combine(&j.crc);
            size += j.size;
            compressed += j.compressed;
        }
    }
    raw.extend_from_slice(&join::LAST_BLOCK);
    zip.write(&raw, &mut out);
    zip.finish_entry(crc.finalize(), compressed + 2, size, &mut out);
    zip.finish(&mut out);
    total + out.len() as u64
}

fn zip_recompress(parts: &[Vec<u8>]) -> u64 {
    let mut rec = Recompressor::new(6);
    let mut out = Vec::new();
    let mut total = 0;
    for p in parts {
        let mut d = flate2::read::MultiGzDecoder::new(&p[..]);
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(k) = std::io::Read::read(&mut d, &mut buf) {
            if k == 0 {
                break;
            }
            let _ = rec.write(&buf[..k]);
            rec.drain_into(&mut out);
            total += out.len() as u64;
            out.clear();
        }
    }
    let _ = rec.finish_into(&mut out);
    total + out.len() as u64
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let mib = args.first().copied().unwrap_or(256);
    let count = args.get(1).copied().unwrap_or(8).max(1);
    let per_part = (mib << 20) / count;
    eprintln!(
        "engine: generating {count} gzip parts of {} MiB of CSV",
        per_part >> 20
    );
    let parts: Vec<Vec<u8>> = (0..count)
        .map(|i| gzip(&rows(per_part as usize, i + 1)))
        .collect();
    let csv = inflate_zlib(&parts);
    let mb = csv as f64 / 1e6;
    let mut runs = Vec::new();
    for (name, f) in [
        (
            "inflate only (zlib-rs)",
            inflate_zlib as fn(&[Vec<u8>]) -> u64,
        ),
        ("inflate only (own decoder)", inflate_ours),
        ("`parts` (verified pass-through)", zip_parts),
        ("`single` (joined streams)", zip_single),
        ("`single` recompressed, level 6", zip_recompress),
    ] {
        eprintln!("engine: {name}");
        runs.push(measure(name, || f(&parts)).0);
    }
    let floor = runs[0].wall.as_secs_f64();
    println!(
        "{count} parts, {mb:.0} MB of CSV, {:.0} MB compressed\n",
        parts.iter().map(Vec::len).sum::<usize>() as f64 / 1e6
    );
    println!("| engine, one core | MB/s of CSV | CPU s | vs inflate only |");
    println!("|---|---|---|---|");
    for r in &runs {
        let s = r.wall.as_secs_f64();
        println!(
            "| {} | {:.0} | {:.2} | {:.2} |",
            r.name,
            mb / s,
            r.cpu.as_secs_f64(),
            floor / s
        );
    }
}
