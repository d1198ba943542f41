//! The archiver alone against the local stack's S3, on parts written here rather than by
//! UNLOAD: gzip parts of several members (which UNLOAD does not write but a gzip tool may)
//! are joined member by member in both layouts without rebuilding the archive, and a damaged
//! part fails the export with a corrupt-data error in both; Parquet parts are stored byte for
//! byte and an object that is not Parquet fails the export; a large part is read by ranges in
//! parallel, all from one version of the object; a part kept on local disk while it is decoded
//! is read from S3 once, and twice when it cannot be kept; a part whose spill file is given up
//! after the `single` writer copied some of it is finished from S3; a damaged part found after
//! the first bytes of a `single` archive went up leaves neither an archive nor an open upload.
//! Every archive is read back with `unzip -t`, Python's zipfile and the `zip` crate
//! (`support::read_zip`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;

use redshift_export_worker::archive::{Archived, Archiver, Plan, REREAD_FROM};
use redshift_export_worker::config::Settings;
use redshift_export_worker::error::JobError;
use redshift_export_worker::message::{Format, Layout, RequestId};
use redshift_export_worker::metrics::Metrics;
use support::{download_archive, read_zip};
use testkit::var;

fn gzip_members(members: &[&str]) -> Vec<u8> {
    members
        .iter()
        .flat_map(|m| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(m.as_bytes()).unwrap();
            e.finish().unwrap()
        })
        .collect()
}

fn rows(from: usize, to: usize) -> String {
    (from..to).map(|i| format!("{i},row {i}\n")).collect()
}

/// Uploads `parts` and their manifest under a new attempt prefix; returns (request id, prefix).
async fn unloaded(parts: &[Vec<u8>], records: &[u64]) -> (RequestId, String) {
    unloaded_as(parts, records, ".gz").await
}

/// As [`unloaded`], the parts' names ending with `suffix`.
async fn unloaded_as(parts: &[Vec<u8>], records: &[u64], suffix: &str) -> (RequestId, String) {
    let rid = RequestId::parse(&testkit::unique("archiver")).unwrap();
    let prefix = format!("unload/{rid}/1/");
    let bucket = var("DEVSTACK_UPLOAD_BUCKET");
    let s3 = testkit::s3();
    let mut entries = Vec::new();
    for (i, (part, count)) in parts.iter().zip(records).enumerate() {
        let key = format!("{prefix}0000_part_{i:02}{suffix}");
        s3.put_object()
            .bucket(&bucket)
            .key(&key)
            .body(part.clone().into())
            .send()
            .await
            .unwrap();
        entries.push(serde_json::json!({
            "url": format!("s3://{bucket}/{key}"),
            "meta": {"content_length": part.len(), "record_count": count},
        }));
    }
    let manifest = serde_json::json!({
        "entries": entries,
        "schema": {"elements": [{"name": "id"}, {"name": "text"}]},
    });
    s3.put_object()
        .bucket(&bucket)
        .key(format!("{prefix}manifest"))
        .body(serde_json::to_vec(&manifest).unwrap().into())
        .send()
        .await
        .unwrap();
    (rid, prefix)
}

fn archiver() -> Archiver {
    archiver_with(testkit::s3(), &[])
}

/// An archiver of the local configuration with `overrides`, reading S3 through `s3`.
fn archiver_with(s3: aws_sdk_s3::Client, overrides: &[(&str, &str)]) -> Archiver {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut env: std::collections::HashMap<String, String> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.insert(
        "EXPORT_WORKER__ARCHIVE__BUCKET".into(),
        var("DEVSTACK_ARCHIVE_BUCKET"),
    );
    let settings = Settings::load_with_env(&root.join("config/local.toml"), env).unwrap();
    Archiver::new(s3, settings.archive, var("DEVSTACK_UPLOAD_BUCKET"))
}

/// `archive_part_rereads_total` by `REREAD_FROM` (memory, spill, s3).
fn rereads(metrics: &Metrics) -> [u64; 3] {
    REREAD_FROM.map(|from| {
        metrics
            .archive_part_rereads
            .with_label_values(&[from])
            .get()
    })
}

async fn build(
    archiver: &Archiver,
    rid: &RequestId,
    prefix: &str,
    layout: Layout,
) -> Result<Archived, JobError> {
    build_as(archiver, rid, prefix, Format::Csv, layout).await
}

async fn build_as(
    archiver: &Archiver,
    rid: &RequestId,
    prefix: &str,
    format: Format,
    layout: Layout,
) -> Result<Archived, JobError> {
    archiver
        .build(Plan {
            request_id: rid,
            format,
            layout,
            unload_prefix: prefix,
        })
        .await
}

/// Bytes framed as a Parquet file: magic, `body`, a footer length, magic (the archiver checks
/// the frame; what is inside is the reader's business, tested with pyarrow in parquet.rs).
fn parquet_framed(body: &[u8]) -> Vec<u8> {
    let mut file = b"PAR1".to_vec();
    file.extend_from_slice(body);
    file.extend_from_slice(&(body.len().min(100) as u32).to_le_bytes());
    file.extend_from_slice(b"PAR1");
    file
}

#[tokio::test]
async fn parts_of_several_gzip_members_are_joined_in_both_layouts_without_a_rebuild() {
    let texts = [rows(0, 5000), rows(5000, 5001), rows(5001, 9000)];
    let parts = vec![
        gzip_members(&[&texts[0]]),
        // Two members, then an empty one.
        gzip_members(&[&texts[1][..3], &texts[1][3..], ""]),
        gzip_members(&[&texts[2][..20_000], &texts[2][20_000..]]),
    ];
    let (rid, prefix) = unloaded(&parts, &[5000, 1, 3999]).await;
    let metrics = Metrics::new();
    let archiver = archiver().with_metrics(&metrics);
    for layout in [Layout::Parts, Layout::Single] {
        let archived = build(&archiver, &rid, &prefix, layout).await.unwrap();
        assert_eq!(archived.recompressed, None, "{layout:?}");
        let (path, _) = download_archive(&archived.key).await;
        let entries = read_zip(&path);
        std::fs::remove_file(&path).unwrap();
        match layout {
            Layout::Parts => {
                // `parts` counts a header record per part; these parts have none.
                assert_eq!(archived.rows, 9000 - 3);
                let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
                assert_eq!(
                    names,
                    ["0000_part_00.csv", "0000_part_01.csv", "0000_part_02.csv"]
                );
                for ((_, text), expected) in entries.iter().zip(&texts) {
                    assert_eq!(text, expected);
                }
            }
            Layout::Single => {
                assert_eq!(archived.rows, 9000);
                assert_eq!(entries.len(), 1);
                assert_eq!(entries[0].1, format!("id,text\n{}", texts.concat()));
            }
        }
    }
    // Each part came in one batch and was kept: S3 was read once per part.
    assert_eq!(rereads(&metrics), [6, 0, 0]);
}

#[tokio::test]
async fn a_damaged_part_fails_the_archive_as_corrupt_in_both_layouts() {
    let good = gzip_members(&[&rows(0, 100)]);
    let mut damaged = gzip_members(&[&rows(100, 200)]);
    // The trailer's CRC-32.
    let at = damaged.len() - 8;
    damaged[at] ^= 0x01;
    let (rid, prefix) = unloaded(&[good, damaged], &[100, 100]).await;
    let archiver = archiver();
    for layout in [Layout::Parts, Layout::Single] {
        let e = build(&archiver, &rid, &prefix, layout).await.unwrap_err();
        assert!(!e.is_transient(), "{layout:?}: {e}");
        assert!(e.to_string().contains("0000_part_01.gz"), "{layout:?}: {e}");
    }
}

#[tokio::test]
async fn parquet_parts_are_stored_byte_for_byte_and_a_foreign_part_fails() {
    // A part larger than several archive upload parts, between two small ones.
    let mut rng = fastrand::Rng::with_seed(7);
    let big: Vec<u8> = (0..12 * 1024 * 1024).map(|_| rng.u8(..)).collect();
    let parts = vec![
        parquet_framed(b"first"),
        parquet_framed(&big),
        parquet_framed(b""),
    ];
    let (rid, prefix) = unloaded_as(&parts, &[1, 2, 3], ".parquet").await;
    let archiver = archiver();
    let archived = build_as(&archiver, &rid, &prefix, Format::Parquet, Layout::Parts)
        .await
        .unwrap();
    assert_eq!(archived.rows, 6);
    let (path, bytes) = download_archive(&archived.key).await;
    assert_eq!(archived.bytes, bytes.len() as u64);
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    assert_eq!(zip.len(), 3);
    for (i, part) in parts.iter().enumerate() {
        let mut entry = zip.by_index(i).unwrap();
        assert_eq!(entry.name(), format!("0000_part_{i:02}.parquet"));
        assert_eq!(entry.compression(), zip::CompressionMethod::Stored);
        let mut read = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut read).unwrap();
        assert!(read == *part, "entry {i} differs from its part");
        assert_eq!(archived.entries[i].crc32, crc32fast::hash(part));
        assert_eq!(archived.entries[i].rows, i as u64 + 1);
    }
    let unzip = std::process::Command::new("unzip")
        .arg("-tq")
        .arg(&path)
        .output()
        .unwrap();
    assert!(unzip.status.success(), "{unzip:?}");

    // A gzip file where a Parquet file should be.
    let (rid, prefix) = unloaded_as(
        &[parquet_framed(b"ok"), gzip_members(&["not parquet"])],
        &[1, 1],
        ".parquet",
    )
    .await;
    let e = build_as(&archiver, &rid, &prefix, Format::Parquet, Layout::Parts)
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(
        e.to_string().contains("0000_part_01.parquet") && e.to_string().contains("Parquet"),
        "{e}"
    );
}

#[tokio::test]
async fn a_large_part_is_read_by_ranges_in_parallel_all_of_one_version() {
    // Ranges of 1 MiB with 2 MiB of read-ahead: while one range streams, the next two are
    // fetched. The part is about 3.6 MiB of gzip (random hex compresses poorly), so each of
    // its reads takes four ranges.
    let text = hex_rows(11, 0, 100_000);
    let part = gzip_members(&[&text]);
    assert!(
        part.len() > 3 << 20 && part.len() < 4 << 20,
        "{}",
        part.len()
    );
    let (rid, prefix) = unloaded(std::slice::from_ref(&part), &[100_000]).await;
    let proxy = testkit::FaultProxy::start_with(&var("AWS_ENDPOINT_URL"), Default::default()).await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&testkit::sdk_config(&proxy.url))
            .force_path_style(true)
            .build(),
    );
    let archiver = archiver_with(
        s3,
        &[
            ("EXPORT_WORKER__ARCHIVE__RANGE_SIZE_MIB", "1"),
            ("EXPORT_WORKER__ARCHIVE__READ_AHEAD_MIB", "2"),
            // The second read from S3, with If-Match, is what this test is about.
            ("EXPORT_WORKER__ARCHIVE__SPILL_MIB", "0"),
        ],
    );
    for layout in [Layout::Parts, Layout::Single] {
        let archived = build(&archiver, &rid, &prefix, layout).await.unwrap();
        let (path, _) = download_archive(&archived.key).await;
        let entries = read_zip(&path);
        std::fs::remove_file(&path).unwrap();
        let expected = match layout {
            Layout::Parts => text.clone(),
            Layout::Single => format!("id,text\n{text}"),
        };
        assert!(entries.len() == 1 && entries[0].1 == expected, "{layout:?}");
    }
    let gets = proxy.forwarded_of("GetObject");
    let ranges: Vec<&str> = gets
        .iter()
        .filter_map(|h| h.get("range").and_then(|v| v.to_str().ok()))
        .collect();
    // Two layouts, each reading the part twice (decoded, then copied), four ranges a read.
    assert_eq!(ranges.len(), 2 * 2 * 4, "{ranges:?}");
    for h in gets.iter().filter(|h| h.contains_key("range")) {
        let range = h["range"].to_str().unwrap();
        assert!(
            range.starts_with("bytes=0-") || h.contains_key("if-match"),
            "{range} without If-Match"
        );
    }
    assert!(
        proxy.max_in_flight("GetObject") >= 2,
        "ranges were not read in parallel"
    );
}

/// Random hex rows: gzip leaves them about half their size.
fn hex_rows(seed: u64, from: usize, to: usize) -> String {
    let mut rng = fastrand::Rng::with_seed(seed);
    (from..to)
        .map(|i| {
            let hex: String = (0..32).map(|_| format!("{:02x}", rng.u8(..))).collect();
            format!("{i},{hex}\n")
        })
        .collect()
}

#[tokio::test]
async fn a_part_kept_on_local_disk_is_read_from_s3_once_and_twice_without_room() {
    // Two parts of about 600 KiB of gzip each: more than one batch (256 KiB), which would be
    // kept in memory instead.
    let texts = [hex_rows(21, 0, 15_000), hex_rows(22, 15_000, 30_000)];
    let parts: Vec<Vec<u8>> = texts.iter().map(|t| gzip_members(&[t])).collect();
    assert!(parts.iter().all(|p| p.len() > 512 << 10), "parts too small");
    let (rid, prefix) = unloaded(&parts, &[15_000, 15_000]).await;
    let missing = std::env::temp_dir().join(testkit::unique("no-such-dir"));
    let spill_dir = missing.to_str().unwrap();
    // (configuration, GetObject of parts per archive, parts of both archives copied from
    // memory, spill and S3 as `archive_part_rereads_total` counts them)
    for (overrides, reads, copies) in [
        (vec![], 2, [0, 4, 0]),
        (
            vec![("EXPORT_WORKER__ARCHIVE__SPILL_DIR", spill_dir)],
            4,
            [0, 0, 4],
        ),
        (
            vec![("EXPORT_WORKER__ARCHIVE__SPILL_MIB", "0")],
            4,
            [0, 0, 4],
        ),
        // Room for one part: the other, decoded at the same time, waits for nothing and is
        // read twice.
        (
            vec![("EXPORT_WORKER__ARCHIVE__SPILL_MIB", "1")],
            3,
            [0, 2, 2],
        ),
    ] {
        let proxy =
            testkit::FaultProxy::start_with(&var("AWS_ENDPOINT_URL"), Default::default()).await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&testkit::sdk_config(&proxy.url))
                .force_path_style(true)
                .build(),
        );
        let metrics = Metrics::new();
        let archiver = archiver_with(s3, &overrides).with_metrics(&metrics);
        for layout in [Layout::Parts, Layout::Single] {
            let archived = build(&archiver, &rid, &prefix, layout).await.unwrap();
            assert_eq!(archived.recompressed, None);
            let (path, _) = download_archive(&archived.key).await;
            let entries = read_zip(&path);
            std::fs::remove_file(&path).unwrap();
            let got: Vec<&str> = entries.iter().map(|(_, text)| text.as_str()).collect();
            let joined = format!("id,text\n{}{}", texts[0], texts[1]);
            match layout {
                Layout::Parts => assert_eq!(got, [&texts[0], &texts[1]], "{overrides:?}"),
                Layout::Single => assert_eq!(got, [&joined], "{overrides:?}"),
            }
        }
        // Two layouts, each reading the manifest and the parts.
        let gets = proxy.forwarded_of("GetObject").len();
        assert_eq!(gets, 2 * (1 + reads), "{overrides:?}");
        assert_eq!(rereads(&metrics), copies, "{overrides:?}");
    }
    assert!(!missing.exists());
}

#[tokio::test]
async fn archive_bodies_go_up_unsigned_with_their_crc32() {
    // One archive above the 5 MiB part (UploadPart) and one below it (PutObject).
    let big = hex_rows(31, 0, 170_000);
    let small = hex_rows(32, 0, 1_000);
    let proxy = testkit::FaultProxy::start_with(&var("AWS_ENDPOINT_URL"), Default::default()).await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&testkit::sdk_config(&proxy.url))
            .force_path_style(true)
            .build(),
    );
    let archiver = archiver_with(s3, &[("EXPORT_WORKER__ARCHIVE__PART_SIZE_MIB", "5")]);
    for (text, rows) in [(&big, 170_000), (&small, 1_000)] {
        let (rid, prefix) = unloaded(&[gzip_members(&[text])], &[rows]).await;
        let archived = build(&archiver, &rid, &prefix, Layout::Parts)
            .await
            .unwrap();
        let (path, _) = download_archive(&archived.key).await;
        let entries = read_zip(&path);
        std::fs::remove_file(&path).unwrap();
        assert!(entries.len() == 1 && &entries[0].1 == text);
    }
    let uploads = proxy.forwarded_of("UploadPart");
    let puts = proxy.forwarded_of("PutObject");
    assert!(
        uploads.len() == 2 && puts.len() == 1,
        "{} {}",
        uploads.len(),
        puts.len()
    );
    for headers in uploads.iter().chain(&puts) {
        assert_eq!(headers["x-amz-content-sha256"], "UNSIGNED-PAYLOAD");
        assert!(headers.contains_key("x-amz-checksum-crc32"), "{headers:?}");
    }
}

/// Rewrites the manifest under `prefix` so that it gives every part the length `length`.
async fn misstate_lengths(prefix: &str, length: u64) {
    let (s3, bucket) = (testkit::s3(), var("DEVSTACK_UPLOAD_BUCKET"));
    let key = format!("{prefix}manifest");
    let got = s3.get_object().bucket(&bucket).key(&key).send().await;
    let body = got.unwrap().body.collect().await.unwrap().into_bytes();
    let mut manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
    for entry in manifest["entries"].as_array_mut().unwrap() {
        entry["meta"]["content_length"] = length.into();
    }
    let body = serde_json::to_vec(&manifest).unwrap();
    let put = s3.put_object().bucket(&bucket).key(&key).body(body.into());
    put.send().await.unwrap();
}

#[tokio::test]
async fn a_part_whose_spill_file_is_lost_after_it_was_copied_in_part_is_finished_from_s3() {
    // The manifest understates the part (300 KiB for 1.2 MB): its spill file, 1 MiB, runs out
    // after the `single` writer has copied the first batches from it; the rest comes from S3,
    // whose first bytes are checked against those copied.
    let text = hex_rows(23, 0, 30_000);
    let part = gzip_members(&[&text]);
    assert!(part.len() > 1 << 20, "part too small");
    let (rid, prefix) = unloaded(&[part], &[30_000]).await;
    misstate_lengths(&prefix, 300 << 10).await;
    let metrics = Metrics::new();
    let archiver = archiver().with_metrics(&metrics);
    let archived = build(&archiver, &rid, &prefix, Layout::Single)
        .await
        .unwrap();
    assert_eq!(archived.recompressed, None);
    let (path, _) = download_archive(&archived.key).await;
    let entries = read_zip(&path);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(entries.len(), 1);
    assert!(
        entries[0].1 == format!("id,text\n{text}"),
        "the entry differs"
    );
    assert_eq!(rereads(&metrics), [0, 0, 1], "finished from S3");
}

#[tokio::test]
async fn a_large_damaged_part_found_after_its_first_bytes_went_up_leaves_no_archive() {
    // About 7 MB of gzip: more than the first archive upload part (5 MiB), which the `single`
    // writer sends while the part is still being decoded; its trailer's CRC-32 is wrong.
    let mut damaged = gzip_members(&[&hex_rows(24, 0, 200_000)]);
    assert!(damaged.len() > 6 << 20, "part too small");
    let at = damaged.len() - 8;
    damaged[at] ^= 0x01;
    let (rid, prefix) = unloaded(&[damaged], &[200_000]).await;
    let archiver = archiver();
    let e = build(&archiver, &rid, &prefix, Layout::Single)
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("0000_part_00.gz"), "{e}");
    let (s3, bucket) = (testkit::s3(), var("DEVSTACK_ARCHIVE_BUCKET"));
    let key = archiver.archive_key(&rid);
    let head = s3.head_object().bucket(&bucket).key(&key).send().await;
    assert!(head.is_err(), "an archive was written");
    let uploads = s3.list_multipart_uploads().bucket(&bucket).prefix(&key);
    let uploads = uploads.send().await.unwrap();
    assert!(uploads.uploads().is_empty(), "an upload was left open");
}
