//! UNLOAD through the Data API: object naming, formats, manifests, splitting, overwrite rules
//! and errors, checked against what lands in moto's S3 and against PostgreSQL itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_sdk_redshiftdata::types::StatusString;
use serde_json::Value;
use testkit::{Emulator, gunzip, objects, unique, var};

mod formats;

/// A private emulator process built from this crate.
async fn emulator(extra: &[&str]) -> Emulator {
    Emulator::start(env!("CARGO_BIN_EXE_redshift-data-local"), extra).await
}

fn bucket() -> String {
    var("DEVSTACK_UPLOAD_BUCKET")
}

/// `UNLOAD ('<select>') TO 's3://upload/<prefix>' IAM_ROLE default <options>`, quoting the
/// SELECT the way Redshift requires.
fn unload(select: &str, prefix: &str, options: &str) -> String {
    format!(
        "UNLOAD ('{}') TO 's3://{}/{prefix}' IAM_ROLE default {options}",
        select.replace('\\', "\\\\").replace('\'', "''"),
        bucket()
    )
}

fn keys(objs: &[(String, Vec<u8>)], prefix: &str) -> Vec<String> {
    objs.iter()
        .map(|(k, _)| k[prefix.len()..].to_string())
        .collect()
}

async fn finished(
    emu: &Emulator,
    sql: &str,
) -> aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput {
    let d = emu.run(sql).await;
    assert_eq!(d.status(), Some(&StatusString::Finished), "{:?}", d.error());
    d
}

async fn failed(emu: &Emulator, sql: &str) -> String {
    let d = emu.run(sql).await;
    assert_eq!(
        d.status(),
        Some(&StatusString::Failed),
        "expected a failure for {sql}"
    );
    d.error().unwrap().to_string()
}

#[tokio::test]
async fn parallel_on_names_parts_per_slice_and_skips_empty_slices() {
    let emu = emulator(&[]).await;
    let prefix = format!("{}/flowers_", unique("naming"));
    let d = finished(
        &emu,
        &unload("select * from rsdataapi.product_detail", &prefix, ""),
    )
    .await;
    assert_eq!(d.result_rows(), 3);
    assert_eq!(d.has_result_set(), Some(false));
    let objs = objects(&bucket(), &prefix).await;
    assert_eq!(
        keys(&objs, &prefix),
        ["0000_part_00", "0001_part_00", "0002_part_00"],
        "4 slices, 3 rows: no file for slice 3"
    );
    let all: String = objs
        .iter()
        .map(|(_, b)| String::from_utf8(b.clone()).unwrap())
        .collect();
    assert!(
        all.contains("FLOWER12|12345|Flowers - Rose|Flowers-Rose\n"),
        "default is pipe-delimited text: {all}"
    );

    let gz_prefix = format!("{}/gz_", unique("naming"));
    finished(
        &emu,
        &unload("select * from rsdataapi.product_detail", &gz_prefix, "GZIP"),
    )
    .await;
    let objs = objects(&bucket(), &gz_prefix).await;
    assert_eq!(
        keys(&objs, &gz_prefix),
        ["0000_part_00.gz", "0001_part_00.gz", "0002_part_00.gz"]
    );
    assert!(gunzip(&objs[0].1).starts_with("FLOWER"));

    let ext_prefix = format!("{}/ext_", unique("naming"));
    finished(
        &emu,
        &unload(
            "select * from rsdataapi.product_detail",
            &ext_prefix,
            "CSV GZIP EXTENSION 'csv.gz'",
        ),
    )
    .await;
    assert_eq!(
        keys(&objects(&bucket(), &ext_prefix).await, &ext_prefix)[0],
        "0000_part_00.csv.gz"
    );
}

#[tokio::test]
async fn parallel_off_writes_one_numbered_series_and_maxfilesize_splits_it() {
    let emu = emulator(&[]).await;
    let prefix = format!("{}/serial_", unique("serial"));
    finished(
        &emu,
        &unload(
            "select * from rsdataapi.product_detail order by sku",
            &prefix,
            "PARALLEL OFF",
        ),
    )
    .await;
    let objs = objects(&bucket(), &prefix).await;
    assert_eq!(keys(&objs, &prefix), ["000"]);
    let text = String::from_utf8(objs[0].1.clone()).unwrap();
    assert!(
        text.starts_with("FLOWER12|") && text.lines().count() == 3,
        "{text}"
    );

    // ~12 MB of rows at MAXFILESIZE 5 MB: three files, none over the limit.
    let select = "select g, repeat('x', 120) as pad from generate_series(1, 100000) g order by g";
    let prefix = format!("{}/split_", unique("serial"));
    finished(
        &emu,
        &unload(select, &prefix, "PARALLEL OFF MAXFILESIZE 5 MB HEADER"),
    )
    .await;
    let objs = objects(&bucket(), &prefix).await;
    assert_eq!(keys(&objs, &prefix), ["000", "001", "002"]);
    let mut next = 1;
    for (key, body) in &objs {
        assert!(
            body.len() <= 5 * 1024 * 1024,
            "{key} is {} bytes",
            body.len()
        );
        let text = String::from_utf8(body.clone()).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("g|pad"), "HEADER starts every file");
        for line in lines {
            assert_eq!(
                line.split('|').next().unwrap(),
                next.to_string(),
                "PARALLEL OFF keeps ORDER BY order"
            );
            next += 1;
        }
    }
    assert_eq!(next, 100001);
}

#[tokio::test]
async fn parallel_on_with_maxfilesize_numbers_parts_within_each_slice() {
    let emu = emulator(&[]).await;
    let select = "select g, repeat('y', 200) as pad from generate_series(1, 120000) g";
    let prefix = format!("{}/p_", unique("slices"));
    let d = finished(&emu, &unload(select, &prefix, "MAXFILESIZE 5 MB GZIP")).await;
    assert_eq!(d.result_rows(), 120000);
    let objs = objects(&bucket(), &prefix).await;
    let names = keys(&objs, &prefix);
    // 24 MB of text over 4 slices: 6 MB each before compression, one file each once gzipped.
    assert_eq!(
        names,
        [
            "0000_part_00.gz",
            "0001_part_00.gz",
            "0002_part_00.gz",
            "0003_part_00.gz"
        ]
    );
    let rows: usize = objs.iter().map(|(_, b)| gunzip(b).lines().count()).sum();
    assert_eq!(rows, 120000);

    let prefix = format!("{}/p_", unique("slices"));
    finished(&emu, &unload(select, &prefix, "MAXFILESIZE 5 MB")).await;
    let names = keys(&objects(&bucket(), &prefix).await, &prefix);
    assert_eq!(
        names,
        [
            "0000_part_00",
            "0000_part_01",
            "0001_part_00",
            "0001_part_01",
            "0002_part_00",
            "0002_part_01",
            "0003_part_00",
            "0003_part_01"
        ]
    );
}

#[tokio::test]
async fn manifest_verbose_describes_every_file() {
    let emu = emulator(&[]).await;
    let prefix = format!("{}/m_", unique("manifest"));
    finished(
        &emu,
        &unload(
            "select * from demo.orders where order_id <= 1000",
            &prefix,
            "CSV HEADER GZIP MANIFEST VERBOSE",
        ),
    )
    .await;
    let objs = objects(&bucket(), &prefix).await;
    let (manifest_key, manifest) = objs.iter().find(|(k, _)| k.ends_with("manifest")).unwrap();
    assert_eq!(manifest_key, &format!("{prefix}manifest"));
    let m: Value = serde_json::from_slice(manifest).unwrap();
    let entries = m["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4);
    let mut total_len = 0;
    let mut total_records = 0;
    for e in entries {
        let url = e["url"].as_str().unwrap();
        let key = url.strip_prefix(&format!("s3://{}/", bucket())).unwrap();
        let (_, body) = objs.iter().find(|(k, _)| k == key).unwrap();
        assert_eq!(e["meta"]["content_length"], body.len() as u64);
        assert!(
            gunzip(body).starts_with("order_id,customer,"),
            "HEADER in every file"
        );
        // 1000 rows round-robin over 4 slices, plus the header line, which Redshift counts.
        assert_eq!(e["meta"]["record_count"], 251, "{url}");
        total_len += body.len() as u64;
        total_records += e["meta"]["record_count"].as_u64().unwrap();
    }
    assert_eq!(m["meta"]["content_length"], total_len);
    assert_eq!(m["meta"]["record_count"], total_records);
    assert_eq!(m["author"]["name"], "Amazon Redshift");
    let elements = m["schema"]["elements"].as_array().unwrap();
    let names: Vec<_> = elements
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "order_id",
            "customer",
            "amount",
            "quantity",
            "order_date",
            "created_at",
            "shipped",
            "notes",
            "priority"
        ]
    );
    assert_eq!(elements[0]["type"]["base"], "bigint");
    assert_eq!(
        elements[2]["type"],
        serde_json::json!({"base": "numeric", "precision": 12, "scale": 2})
    );

    let plain_prefix = format!("{}/plain_", unique("manifest"));
    finished(&emu, &unload("select 1 as one", &plain_prefix, "MANIFEST")).await;
    let objs = objects(&bucket(), &plain_prefix).await;
    let m: Value = serde_json::from_slice(
        &objs
            .iter()
            .find(|(k, _)| k.ends_with("manifest"))
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(
        m["entries"][0]["meta"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["content_length"]
    );
    assert!(m.get("schema").is_none() && m.get("author").is_none());
}

#[tokio::test]
async fn zero_rows_write_no_data_files() {
    let emu = emulator(&[]).await;
    let select = "select * from rsdataapi.product_detail where sku = 'NOPE'";
    let prefix = format!("{}/z_", unique("zero"));
    let d = finished(
        &emu,
        &unload(select, &prefix, "CSV HEADER GZIP MANIFEST VERBOSE"),
    )
    .await;
    assert_eq!(d.result_rows(), 0);
    let objs = objects(&bucket(), &prefix).await;
    assert_eq!(keys(&objs, &prefix), ["manifest"]);
    let m: Value = serde_json::from_slice(&objs[0].1).unwrap();
    assert_eq!(m["entries"], serde_json::json!([]));
    assert_eq!(m["meta"]["record_count"], 0);
    assert_eq!(m["schema"]["elements"].as_array().unwrap().len(), 4);

    let omit = emulator(&["--zero-row-manifest", "omit"]).await;
    let prefix = format!("{}/z_", unique("zero"));
    finished(&omit, &unload(select, &prefix, "MANIFEST")).await;
    assert!(objects(&bucket(), &prefix).await.is_empty());
}

#[tokio::test]
async fn existing_output_needs_allowoverwrite_and_cleanpath_empties_the_prefix() {
    let emu = emulator(&[]).await;
    let prefix = format!("{}/o_", unique("overwrite"));
    let select = "select * from rsdataapi.product_detail";
    finished(&emu, &unload(select, &prefix, "MANIFEST")).await;
    let error = failed(&emu, &unload(select, &prefix, "MANIFEST")).await;
    assert!(
        error.contains("Specified unload destination on S3 is not empty"),
        "{error}"
    );
    finished(&emu, &unload(select, &prefix, "MANIFEST ALLOWOVERWRITE")).await;

    testkit::s3()
        .put_object()
        .bucket(bucket())
        .key(format!("{prefix}stray.txt"))
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap();
    finished(
        &emu,
        &unload("select 1 as one", &prefix, "PARALLEL OFF CLEANPATH"),
    )
    .await;
    assert_eq!(keys(&objects(&bucket(), &prefix).await, &prefix), ["000"]);
}

#[tokio::test]
async fn invalid_statements_fail_with_redshift_errors() {
    let emu = emulator(&[]).await;
    let prefix = format!("{}/e_", unique("errors"));
    let select = "select * from rsdataapi.product_detail";
    let cases = [
        (
            unload(select, &prefix, "CSV FIXEDWIDTH 'sku:10'"),
            "cannot be used together",
        ),
        (
            unload(select, &prefix, "FORMAT JSON HEADER"),
            "cannot be used together",
        ),
        (
            unload(select, &prefix, "CLEANPATH ALLOWOVERWRITE"),
            "cannot be used together",
        ),
        (unload(select, &prefix, "VERBOSE"), "VERBOSE"),
        (unload(select, &prefix, "MAXFILESIZE 1 MB"), "out of range"),
        (
            unload(&format!("{select} limit 1"), &prefix, ""),
            "Limit clause",
        ),
        (
            unload(select, &prefix, "PARQUET HEADER"),
            "PARQUET and HEADER",
        ),
        (unload(select, &prefix, "ZSTD"), "not implemented"),
        (
            unload("select * from missing_table", &prefix, ""),
            "relation \"missing_table\" does not exist",
        ),
        (
            format!("UNLOAD ('{select}') TO 's3://{}/{prefix}'", bucket()),
            "authorization",
        ),
        (
            format!(
                "UNLOAD ('{select}') TO 's3://no-such-bucket-{}/x' IAM_ROLE default",
                unique("b")
            ),
            "S3ServiceException",
        ),
    ];
    for (sql, expected) in &cases {
        let error = failed(&emu, sql).await;
        assert!(error.contains(expected), "{sql}\n  gave {error}");
    }
    assert!(
        objects(&bucket(), &prefix).await.is_empty(),
        "failed UNLOADs write nothing"
    );
}
