//! One export end to end: the real binary against the devstack, checked against PostgreSQL,
//! Python's zipfile, `unzip -t`, the SMTP sink, moto's SES outbox and DynamoDB.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

mod refused;

use serde_json::json;
use support::*;
use testkit::var;

#[tokio::test]
async fn sample_message_completes_with_the_sample_rows() {
    let daemon = Daemon::start(&[]).await;
    let rid = testkit::unique("sample");
    daemon
        .send(&json!({"requestid": rid, "sku": "FLOWER12", "productname": "x", "createdate": "2024-01-01"}).to_string())
        .await;
    let state = wait_terminal(&rid, 60).await;
    assert_eq!(state["status"], "COMPLETED", "{state:?}");
    assert_eq!(state["rows"], "1");
    let (path, _) = download_archive(&state["archive_key"]).await;
    let entries = read_zip(&path);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, format!("{rid}.csv"));
    let expected = pg_csv("SELECT * FROM rsdataapi.product_detail WHERE sku = 'FLOWER12'").await;
    assert_eq!(entries[0].1, expected);
    assert_eq!(
        history(&rid).await,
        ["QUEUED", "QUERYING", "ARCHIVING", "NOTIFYING", "COMPLETED"]
    );
}

#[tokio::test]
async fn native_request_csv_equals_postgres_copy_and_the_link_downloads_it() {
    let daemon = Daemon::start(&[]).await;
    let rid = daemon
        .request(
            "orders_between",
            json!({"first": 1, "last": 3000}),
            json!({"notify": {"email": ["analyst@example.org"]}}),
        )
        .await;
    let state = wait_terminal(&rid, 60).await;
    assert_eq!(state["status"], "COMPLETED", "{state:?}");
    assert_eq!(state["rows"], "3000");
    let (path, bytes) = download_archive(&state["archive_key"]).await;
    assert_eq!(state["archive_bytes"], bytes.len().to_string());
    let entries = read_zip(&path);
    let ours = header_and_sorted_rows(&entries[0].1);
    let theirs = header_and_sorted_rows(
        &pg_csv("SELECT * FROM demo.orders WHERE order_id BETWEEN 1 AND 3000").await,
    );
    assert_eq!(ours.0, theirs.0, "one header, PostgreSQL's");
    assert_eq!(ours.1.len(), 3000);
    assert!(
        ours == theirs,
        "the CSV rows differ from PostgreSQL's COPY output"
    );
    for tricky in [
        "\"Acme, Inc. #",
        "O'Brien & Sons",
        "\"Café \"\"Zürich\"\"",
        "Line one\nLine two",
        "日本語 🌸",
        "back\\slash #7",
    ] {
        assert!(entries[0].1.contains(tricky), "{tricky:?} missing");
    }

    // The email names the recipient, the rows and a link that downloads the same bytes
    // without credentials.
    let mail = smtp_mail(&rid).await;
    assert_eq!(mail["to"], "analyst@example.org");
    assert_eq!(mail["envelope_to"], "analyst@example.org");
    assert!(mail["subject"].as_str().unwrap().contains("orders_between"));
    let text = mail["text"].as_str().unwrap();
    assert!(text.contains("3000 rows"), "{text}");
    let link = link_in(text);
    assert!(link.contains("X-Amz-Signature="), "{link}");
    let (status, downloaded) = testkit::http_bytes("GET", &link, "").await;
    assert_eq!(status, 200);
    assert_eq!(downloaded, bytes, "the presigned link serves the archive");
    assert!(mail["html"].as_str().unwrap().contains("Download"));
}

#[tokio::test]
async fn multi_part_export_single_and_parts_layouts() {
    let daemon = Daemon::start(&[]).await;
    let rows = 700_000;
    let expected = header_and_sorted_rows(&pg_csv(&format!(
        "SELECT g AS n, md5(g::text) || md5((g * 7)::text) AS h FROM generate_series(1, {rows}) AS g"
    ))
    .await);
    let single = daemon
        .request("hashes", json!({"rows": rows}), json!({"layout": "single"}))
        .await;
    let parts = daemon
        .request("hashes", json!({"rows": rows}), json!({"layout": "parts"}))
        .await;

    // The UNLOAD wrote more than one file per slice (MAXFILESIZE 5 MB in config/local.toml).
    let state = wait_terminal(&single, 300).await;
    assert_eq!(state["status"], "COMPLETED", "{state:?}");
    assert_eq!(state["rows"], rows.to_string());
    let (path, _) = download_archive(&state["archive_key"]).await;
    let entries = read_zip(&path);
    assert_eq!(entries.len(), 1, "single layout: one file");
    assert!(
        header_and_sorted_rows(&entries[0].1) == expected,
        "single layout rows differ from PostgreSQL"
    );

    let state = wait_terminal(&parts, 300).await;
    assert_eq!(state["status"], "COMPLETED", "{state:?}");
    let (path, _) = download_archive(&state["archive_key"]).await;
    let entries = read_zip(&path);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.len() > 4, "more than one part per slice: {names:?}");
    assert!(
        names.contains(&"0000_part_00.csv") && names.contains(&"0000_part_01.csv"),
        "{names:?}"
    );
    let mut all = Vec::new();
    for (name, text) in &entries {
        let (header, records) = header_and_sorted_rows(text);
        assert_eq!(header, expected.0, "{name} starts with the header");
        all.extend(records);
    }
    all.sort();
    assert!(
        all == expected.1,
        "parts layout rows differ from PostgreSQL"
    );
    let unloaded =
        testkit::objects(&var("DEVSTACK_UPLOAD_BUCKET"), &format!("unload/{parts}/")).await;
    assert!(
        unloaded.is_empty(),
        "unloaded files are deleted after archiving"
    );
}

#[tokio::test]
async fn zero_rows_and_json_exports() {
    let daemon = Daemon::start(&[]).await;
    let empty = daemon.request_sku("NOPE").await;
    let json_rid = daemon
        .request(
            "order_notes",
            json!({"last": 10}),
            json!({"format": "json"}),
        )
        .await;

    let state = wait_terminal(&empty, 60).await;
    assert_eq!(state["status"], "COMPLETED", "{state:?}");
    assert_eq!(state["rows"], "0");
    let (path, _) = download_archive(&state["archive_key"]).await;
    let entries = read_zip(&path);
    assert_eq!(
        entries,
        vec![(
            format!("{empty}.csv"),
            "sku,product_id,product_name,product_description\n".to_string()
        )]
    );
    assert!(
        smtp_mail(&empty).await["text"]
            .as_str()
            .unwrap()
            .contains("0 rows")
    );

    let state = wait_terminal(&json_rid, 60).await;
    assert_eq!(state["status"], "COMPLETED", "{state:?}");
    let (path, _) = download_archive(&state["archive_key"]).await;
    let entries = read_zip(&path);
    assert_eq!(entries[0].0, format!("{json_rid}.json"));
    let mut ids: Vec<i64> = entries[0]
        .1
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["order_id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, (1..=10).collect::<Vec<_>>());
}

#[tokio::test]
async fn ses_path_sends_the_link_to_the_recipients() {
    let daemon = Daemon::start(&[("EXPORT_WORKER__EMAIL__TRANSPORT", "ses")]).await;
    let rid = daemon
        .request(
            "product_detail_by_sku",
            json!({"sku": "FLOWER13"}),
            json!({"notify": {"email": ["a@example.com", "b@example.org"]}}),
        )
        .await;
    let state = wait_terminal(&rid, 60).await;
    assert_eq!(state["status"], "COMPLETED", "{state:?}");
    let (destinations, mail) = ses_mail(&rid).await;
    // moto appends the message's To: header to the API's destinations, so each appears twice.
    let mut destinations: Vec<&str> = destinations
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    destinations.sort();
    destinations.dedup();
    assert_eq!(destinations, ["a@example.com", "b@example.org"]);
    assert_eq!(mail["to"], "a@example.com, b@example.org");
    assert_eq!(mail["from"], var("DEVSTACK_SES_FROM"));
    assert!(mail["subject"].as_str().unwrap().contains(&rid));
    let text = mail["text"].as_str().unwrap();
    assert!(text.contains("1 row,"), "{text}");
    let (status, _) = testkit::http_bytes("GET", &link_in(text), "").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn status_command_shows_the_history_in_order() {
    let daemon = Daemon::start(&[]).await;
    let rid = daemon.request_sku("FLOWER14").await;
    assert_eq!(wait_terminal(&rid, 60).await["status"], "COMPLETED");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_redshift-export-worker"))
        .args(["status", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config/local.toml"))
        .args([&rid, "--all"])
        .env_clear()
        .envs(
            testkit::devstack()
                .iter()
                .filter(|(k, _)| k.starts_with("AWS_")),
        )
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("COMPLETED (attempt 1)"), "{text}");
    let positions: Vec<usize> = [
        "→ QUEUED",
        "→ QUERYING",
        "→ ARCHIVING",
        "→ NOTIFYING",
        "→ COMPLETED",
    ]
    .iter()
    .map(|s| {
        text.find(s)
            .unwrap_or_else(|| panic!("{s} missing in {text}"))
    })
    .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "history out of order: {text}"
    );

    let missing = tokio::process::Command::new(env!("CARGO_BIN_EXE_redshift-export-worker"))
        .args(["status", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config/local.toml"))
        .arg("no-such-request")
        .env_clear()
        .envs(
            testkit::devstack()
                .iter()
                .filter(|(k, _)| k.starts_with("AWS_")),
        )
        .output()
        .await
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
}

#[tokio::test]
async fn zero_rows_without_a_manifest_give_an_empty_csv() {
    let emulator = private_emulator(&["--zero-row-manifest", "omit"]).await;
    let daemon = Daemon::start(&[redshift_at(&emulator)]).await;
    let rid = daemon.request_sku("NOTHING").await;
    let state = wait_terminal(&rid, 60).await;
    assert_eq!(state["status"], "COMPLETED", "{state:?}");
    assert_eq!(state["rows"], "0");
    let (path, _) = download_archive(&state["archive_key"]).await;
    assert_eq!(
        read_zip(&path),
        vec![(format!("{rid}.csv"), String::new())],
        "no columns known, so no header"
    );
}
