//! The archive engine alone, on gzip parts held in memory: how fast each way of building the
//! zip runs, against inflating the same parts and throwing the data away (the floor for
//! anything that verifies). `scripts/bench` runs it on the parts a real UNLOAD wrote:
//! `cargo bench --bench engine -- DIR`; without a directory it generates UNLOAD-like parts:
//! `cargo bench --bench engine -- [MiB of CSV] [parts]`. Every engine runs `ENGINE_REPEATS` times
//! (3), interleaved, and its fastest run counts; `ENGINE_ONLY=text` runs only the engines whose
//! names contain `text` (and the inflate-only floor). The last line it prints is the result
//! as JSON.

use std::io::Write;
use std::time::{Duration, Instant};

use redshift_export_worker::archive::deflate::{PassThrough, Recompressor};
use redshift_export_worker::archive::edits::Edits;
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

/// One way of building the archive from the parts; returns the bytes written.
type Engine = dyn Fn(&[Vec<u8>]) -> u64;

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

/// What the first pass over a part found: its edits, CRC-32, size and DEFLATE size.
type Plan = (Edits, u32, u64, u64);

fn plan_joined(part: &[u8]) -> Option<Plan> {
    let mut joiner = Joiner::recording();
    let mut raw = Vec::new();
    for chunk in part.chunks(256 * 1024) {
        joiner.feed(chunk, &mut raw).ok()?;
        raw.clear();
    }
    let j = joiner.finish(&mut raw).ok()?;
    Some((j.edits, j.crc.finalize(), j.size, j.compressed))
}

fn plan_passed(part: &[u8]) -> Option<Plan> {
    let mut pass = PassThrough::default();
    let mut raw = Vec::new();
    for chunk in part.chunks(256 * 1024) {
        pass.feed(chunk, &mut raw).ok()?;
        raw.clear();
    }
    let edits = pass.edits();
    let (crc, compressed, size) = pass.finish().ok()?;
    Some((edits, crc, size, compressed))
}

/// The archive's pipeline without S3: `threads` decode parts ahead (the first pass), the
/// writer copies each part with its edits in manifest order as soon as its plan is there.
fn pipeline(parts: &[Vec<u8>], threads: usize, single: bool) -> u64 {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Option<Plan>)>();
    let plan_one = if single { plan_joined } else { plan_passed };
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (tx, next) = (tx.clone(), &next);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(part) = parts.get(i) else { break };
                    if tx.send((i, plan_one(part))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut zip = ZipWriter::new(std::time::SystemTime::now());
        let (mut out, mut raw, mut total) = (Vec::new(), Vec::new(), 0u64);
        let mut ready = std::collections::BTreeMap::new();
        if single {
            zip.start_entry("export.csv", &mut out);
        }
        let mut crc = crc32fast::Hasher::new();
        let (mut size, mut compressed) = (0u64, 0u64);
        for (i, part) in parts.iter().enumerate() {
            while !ready.contains_key(&i) {
                let Ok((j, plan)) = rx.recv() else { return 0 };
                ready.insert(j, plan);
            }
            let Some(Some((edits, c, s, k))) = ready.remove(&i) else {
                return 0;
            };
            if !single {
                zip.start_entry(&format!("{i:04}_part_00.csv"), &mut out);
            }
            let mut apply = edits.apply();
            for chunk in part.chunks(64 * 1024) {
                apply.feed(chunk, &mut raw);
                zip.write(&raw, &mut out);
                raw.clear();
                total += out.len() as u64;
                out.clear();
            }
            apply.finish(&mut raw);
            zip.write(&raw, &mut out);
            raw.clear();
            if single {
                crc.combine(&crc32fast::Hasher::new_with_initial_len(c, s));
                size += s;
                compressed += k;
            } else {
                zip.finish_entry(c, k, s, &mut out);
            }
        }
        if single {
            zip.write(&join::LAST_BLOCK, &mut out);
            zip.finish_entry(crc.finalize(), compressed + 2, size, &mut out);
        }
        zip.finish(&mut out);
        total + out.len() as u64
    })
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

/// The parts in `dir` (`*.gz`, in name order), or generated ones.
fn parts(args: &[String]) -> Vec<Vec<u8>> {
    if let Some(dir) = args.first().filter(|a| std::path::Path::new(a).is_dir()) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default();
        names.retain(|p: &std::path::PathBuf| p.extension().is_some_and(|e| e == "gz"));
        names.sort();
        eprintln!("engine: reading {} gzip parts from {dir}", names.len());
        return names.iter().filter_map(|p| std::fs::read(p).ok()).collect();
    }
    let numbers: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let mib = numbers.first().copied().unwrap_or(256);
    let count = numbers.get(1).copied().unwrap_or(8).max(1);
    let per_part = (mib << 20) / count;
    eprintln!(
        "engine: generating {count} gzip parts of {} MiB of CSV",
        per_part >> 20
    );
    (0..count)
        .map(|i| gzip(&rows(per_part as usize, i + 1)))
        .collect()
}

fn main() {
    // cargo bench passes --bench; the rest is ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let parts = parts(&args);
    let count = parts.len();
    let csv = inflate_zlib(&parts);
    let mb = csv as f64 / 1e6;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut runs = Vec::new();
    let all: [(&'static str, Box<Engine>); 9] = [
        ("inflate only (zlib-rs), one core", Box::new(inflate_zlib)),
        (
            "inflate only (own decoder), one core",
            Box::new(inflate_ours),
        ),
        ("`parts`, one pass, one core", Box::new(zip_parts)),
        ("`single`, one pass, one core", Box::new(zip_single)),
        (
            "`parts` pipeline, one core",
            Box::new(|p: &[Vec<u8>]| pipeline(p, 1, false)),
        ),
        (
            "`single` pipeline, one core",
            Box::new(|p: &[Vec<u8>]| pipeline(p, 1, true)),
        ),
        (
            "`parts` pipeline, all cores",
            Box::new(move |p: &[Vec<u8>]| pipeline(p, cores, false)),
        ),
        (
            "`single` pipeline, all cores",
            Box::new(move |p: &[Vec<u8>]| pipeline(p, cores, true)),
        ),
        (
            "`single` recompressed at level 6 (before), one core",
            Box::new(zip_recompress),
        ),
    ];
    // Each engine runs ENGINE_REPEATS times (3 unless set), the runs of all engines
    // interleaved, and its fastest run counts: a shared machine's slow moments then fall on
    // no engine in particular.
    let repeats = std::env::var("ENGINE_REPEATS")
        .ok()
        .and_then(|r| r.parse::<usize>().ok())
        .unwrap_or(3)
        .max(1);
    // ENGINE_ONLY=text runs the floor and the engines whose names contain `text`.
    let only = std::env::var("ENGINE_ONLY").unwrap_or_default();
    let all: Vec<_> = all
        .into_iter()
        .enumerate()
        .filter(|(i, (name, _))| *i == 0 || name.contains(only.as_str()))
        .map(|(_, engine)| engine)
        .collect();
    let mut best: Vec<Option<Run>> = all.iter().map(|_| None).collect();
    for round in 0..repeats {
        for ((name, f), best) in all.iter().zip(&mut best) {
            eprintln!("engine: {name} ({}/{repeats})", round + 1);
            let (run, _) = measure(name, || f(&parts));
            if best.as_ref().is_none_or(|b| run.wall < b.wall) {
                *best = Some(run);
            }
        }
    }
    runs.extend(best.into_iter().flatten());
    let floor = runs[0].wall.as_secs_f64();
    println!(
        "{count} parts, {mb:.0} MB of CSV, {:.0} MB compressed\n",
        parts.iter().map(Vec::len).sum::<usize>() as f64 / 1e6
    );
    println!("| engine ({cores} cores) | MB/s of CSV | CPU s | vs inflate only |");
    println!("|---|---|---|---|");
    for r in &runs {
        let s = r.wall.as_secs_f64();
        println!(
            "| {} | {:.0} | {:.2} | {:.2}× |",
            r.name,
            mb / s,
            r.cpu.as_secs_f64(),
            floor / s
        );
    }
    let json: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{{\"name\": \"{}\", \"seconds\": {}, \"cpu\": {}}}",
                r.name,
                r.wall.as_secs_f64(),
                r.cpu.as_secs_f64()
            )
        })
        .collect();
    println!(
        "{{\"csv_bytes\": {csv}, \"parts\": {count}, \"cores\": {cores}, \"runs\": [{}]}}",
        json.join(", ")
    );
}
