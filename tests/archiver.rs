//! The archiver alone against the local stack's S3, on parts written here rather than by
//! UNLOAD: gzip parts of several members (which UNLOAD does not write but a gzip tool may)
//! are joined member by member in both layouts without rebuilding the archive, and a damaged
//! part fails the export with a corrupt-data error in both; Parquet parts are stored byte for
//! byte and an object that is not Parquet fails the export. Every archive is read back with
//! `unzip -t`, Python's zipfile and the `zip` crate (`support::read_zip`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;

use redshift_export_worker::archive::{Archived, Archiver, Plan};
use redshift_export_worker::config::Settings;
use redshift_export_worker::error::JobError;
use redshift_export_worker::message::{Format, Layout, RequestId};
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
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut env: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    env.insert(
        "EXPORT_WORKER__ARCHIVE__BUCKET".into(),
        var("DEVSTACK_ARCHIVE_BUCKET"),
    );
    let settings = Settings::load_with_env(&root.join("config/local.toml"), env).unwrap();
    Archiver::new(
        testkit::s3(),
        settings.archive,
        var("DEVSTACK_UPLOAD_BUCKET"),
    )
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
    let archiver = archiver();
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
