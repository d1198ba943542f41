//! Parquet exports end to end: the real daemon asks the emulator for `FORMAT AS PARQUET`, the
//! emulator writes real Parquet files, and the archive holds them as stored entries, which
//! `unzip -t`, the `zip` crate and pyarrow read back; pyarrow's rows equal PostgreSQL's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::*;

#[tokio::test]
async fn parquet_files_read_back_with_pyarrow_equal_postgres_rows() {
    let daemon = Daemon::start(&[]).await;
    let rid = daemon
        .request(
            "orders_between",
            json!({"first": 1, "last": 5000}),
            json!({"format": "parquet", "notify": {"email": ["analyst@example.org"]}}),
        )
        .await;
    let state = wait_terminal(&rid, 90).await;
    assert_eq!(state["status"], "COMPLETED", "{state:?}");
    assert_eq!(state["rows"], "5000");

    let sql = unload_sql(&rid).await;
    assert_eq!(sql.len(), 1, "{sql:?}");
    assert!(sql[0].contains("FORMAT AS PARQUET"), "{}", sql[0]);
    assert!(
        !sql[0].contains("GZIP") && !sql[0].contains("HEADER"),
        "{}",
        sql[0]
    );

    let (path, _) = download_archive(&state["archive_key"]).await;
    let entries = read_parquet_zip(&path);
    assert!(entries.len() > 1, "one entry per slice's file: {entries:?}");
    for e in &entries {
        assert_eq!(e.method, 0, "{}: Parquet files are stored", e.name);
        assert!(
            e.name.ends_with("_part_00.parquet") && e.name.len() == "0000_part_00.parquet".len(),
            "named as Redshift names the files: {}",
            e.name
        );
    }
    let types: Vec<(&str, &str)> = entries[0]
        .schema
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        types,
        [
            ("order_id", "int64"),
            ("customer", "string"),
            ("amount", "decimal128(12, 2)"),
            ("quantity", "int32"),
            ("order_date", "date32[day]"),
            ("created_at", "timestamp[us]"),
            ("shipped", "bool"),
            ("notes", "string"),
            ("priority", "int16"),
        ]
    );
    let mut ours: Vec<Vec<Option<String>>> = entries
        .iter()
        .flat_map(|e| e.rows.iter().cloned())
        .collect();
    let mut theirs = pg_rows("SELECT * FROM demo.orders WHERE order_id BETWEEN 1 AND 5000").await;
    ours.sort();
    theirs.sort();
    assert_eq!(ours.len(), 5000);
    assert!(
        ours == theirs,
        "pyarrow's rows differ from PostgreSQL's; first difference: {:?}",
        ours.iter().zip(&theirs).find(|(a, b)| a != b)
    );

    // The request's record lists each stored entry with its own rows.
    let recorded: Vec<Value> = serde_json::from_str(&state["archive_entries"]).unwrap();
    let names: Vec<&str> = recorded
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>()
    );
    for (r, e) in recorded.iter().zip(&entries) {
        assert_eq!(r["rows"], e.rows.len(), "{}", e.name);
    }
}

#[tokio::test]
async fn parquet_with_no_rows_is_an_archive_without_entries() {
    let daemon = Daemon::start(&[]).await;
    let rid = daemon
        .request(
            "orders_between",
            json!({"first": 10, "last": 1}),
            json!({"format": "parquet"}),
        )
        .await;
    let state = wait_terminal(&rid, 60).await;
    assert_eq!(state["status"], "COMPLETED", "{state:?}");
    assert_eq!(state["rows"], "0");
    let (path, _) = download_archive(&state["archive_key"]).await;
    assert!(read_parquet_zip(&path).is_empty());
}

#[tokio::test]
async fn parquet_in_one_single_entry_is_refused_before_any_sql() {
    let daemon = Daemon::start(&[]).await;
    let rid = daemon
        .request(
            "orders_between",
            json!({"first": 1, "last": 2}),
            json!({"format": "parquet", "layout": "single"}),
        )
        .await;
    let state = wait_terminal(&rid, 60).await;
    assert_eq!(state["status"], "FAILED", "{state:?}");
    assert_eq!(state["error_code"], "invalid_message");
    assert!(
        state["error_message"].contains("Parquet files cannot be concatenated"),
        "{state:?}"
    );
    assert!(unload_sql(&rid).await.is_empty());
}
