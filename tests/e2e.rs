//! One export end to end: the real binary against the devstack, checked against PostgreSQL,
//! Python's zipfile, `unzip -t`, the SMTP sink, moto's SES outbox and DynamoDB.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
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
async fn invalid_requests_fail_with_codes_and_run_no_sql() {
    let daemon = Daemon::start(&[]).await;
    let cases = [
        (
            daemon
                .request("no_such_template", json!({}), json!({}))
                .await,
            "unknown_template",
        ),
        (
            daemon
                .request(
                    "orders_between",
                    json!({"first": "abc", "last": 2}),
                    json!({}),
                )
                .await,
            "invalid_parameter",
        ),
        (
            daemon
                .request("orders_between", json!({"first": 1}), json!({}))
                .await,
            "missing_parameter",
        ),
        (
            daemon
                .request(
                    "orders_between",
                    json!({"first": 1, "last": 2, "x": 1}),
                    json!({}),
                )
                .await,
            "unknown_parameter",
        ),
        (
            daemon
                .request(
                    "product_detail_by_sku",
                    json!({"sku": "FLOWER12"}),
                    json!({"notify": {"email": ["x@evil.test"]}}),
                )
                .await,
            "recipient_not_allowed",
        ),
        (
            daemon
                .request(
                    "product_detail_by_sku",
                    json!({"sku": "FLOWER12"}),
                    json!({"sql": "select 1"}),
                )
                .await,
            "invalid_message",
        ),
    ];
    for (rid, code) in &cases {
        let state = wait_terminal(rid, 60).await;
        assert_eq!(state["status"], "FAILED", "{rid}: {state:?}");
        assert_eq!(state["error_code"], *code, "{rid}: {state:?}");
        assert!(
            unload_sql(rid).await.is_empty(),
            "{code}: no SQL may reach Redshift"
        );
        assert_eq!(history(rid).await, ["QUEUED", "FAILED"]);
        if *code == "recipient_not_allowed" {
            wait_smtp_to(rid, "exports-operator@example.com", 30).await;
            assert!(
                smtp_mails(rid)
                    .iter()
                    .all(|(to, _)| !to.contains("evil.test")),
                "a refused recipient is never mailed"
            );
        }
    }
}

#[tokio::test]
async fn database_errors_end_failed_with_a_failure_email() {
    let daemon = Daemon::start(&[]).await;
    let rid = daemon.request("missing_table", json!({}), json!({})).await;
    let state = wait_terminal(&rid, 60).await;
    assert_eq!(state["status"], "FAILED", "{state:?}");
    assert_eq!(state["error_code"], "query_failed");
    assert!(
        state["error_message"].contains("does not exist"),
        "{state:?}"
    );
    assert_eq!(history(&rid).await, ["QUEUED", "QUERYING", "FAILED"]);
    let mail = smtp_mail(&rid).await;
    let text = mail["text"].as_str().unwrap();
    assert!(text.contains("could not run the export query"), "{text}");
    assert!(
        !text.contains("no_such_table"),
        "failure emails carry no SQL internals: {text}"
    );
}

#[tokio::test]
async fn injection_attempts_reach_the_database_as_one_exact_literal() {
    let daemon = Daemon::start(&[]).await;
    let values = [
        "O'Brien & Sons #1",
        "back\\slash #7",
        "x' OR '1'='1",
        "\\'; DROP TABLE demo.orders; --",
        "a'' OR ''x''=''x",
        "$$; select 1; $$",
        "/* comment */ -- line",
        "; select pg_sleep(10);",
        "ünï 日本 🌸 \u{7}\t\r\n",
        "\\\\\\",
        "'",
    ];
    let mut rids = Vec::new();
    for v in values {
        rids.push(
            daemon
                .request("orders_by_customer", json!({"customer": v}), json!({}))
                .await,
        );
    }
    for (rid, value) in rids.iter().zip(values) {
        let state = wait_terminal(rid, 60).await;
        assert_eq!(state["status"], "COMPLETED", "{value:?}: {state:?}");
        let sql = unload_sql(rid).await;
        assert_eq!(sql.len(), 1, "{value:?}: exactly one UNLOAD");
        assert_eq!(
            select_literals(&sql[0]),
            vec![value.to_string()],
            "{value:?}"
        );
        let expected = if value.ends_with("#1") || value.ends_with("#7") {
            "1"
        } else {
            "0"
        };
        assert_eq!(
            state["rows"], expected,
            "{value:?} matched exactly its own rows"
        );
    }
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
async fn unusable_messages_are_dead_lettered_with_the_reason() {
    let daemon = Daemon::start(&[]).await;
    daemon.send("this is not json").await;
    let sqs = support::sqs();
    let mut found = None;
    for _ in 0..100 {
        let out = sqs
            .receive_message()
            .queue_url(&daemon.dlq_url)
            .message_attribute_names("All")
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        if let Some(m) = out.messages.unwrap_or_default().into_iter().next() {
            found = Some(m);
            break;
        }
    }
    let m = found.expect("nothing reached the dead-letter queue");
    assert_eq!(m.body(), Some("this is not json"));
    let attrs = m.message_attributes().unwrap();
    assert_eq!(attrs["error_code"].string_value(), Some("invalid_json"));
    assert!(
        attrs["error_message"]
            .string_value()
            .unwrap()
            .contains("not JSON")
    );
}

#[tokio::test]
async fn a_query_past_its_timeout_is_cancelled_and_fails() {
    let emulator = private_emulator(&["--faults", r#"{"hold_statements": true}"#]).await;
    let daemon = Daemon::start(&[
        redshift_at(&emulator),
        ("EXPORT_WORKER__REDSHIFT__QUERY_TIMEOUT_SECS", "2"),
    ])
    .await;
    let rid = daemon.request_sku("FLOWER12").await;
    let state = wait_terminal(&rid, 60).await;
    assert_eq!(state["status"], "FAILED", "{state:?}");
    assert_eq!(state["error_code"], "query_timeout");
    assert_eq!(
        emulator.statement_status(&state["statement_id"]).await,
        Some(aws_sdk_redshiftdata::types::StatusString::Aborted),
        "the statement was cancelled"
    );
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

#[tokio::test]
async fn no_mail_reaches_a_recipient_outside_the_allow_list() {
    let daemon = Daemon::start(&[]).await;
    // One allowed and one refused recipient: neither is mailed; the operator is told.
    let mixed = daemon
        .request(
            "product_detail_by_sku",
            json!({"sku": "FLOWER12"}),
            json!({"notify": {"email": ["ok-mixed@example.com", "x@evil.test"]}}),
        )
        .await;
    // Refused recipients of a request that would fail anyway (unknown template).
    let unknown = daemon
        .request(
            "no_such_template",
            json!({}),
            json!({"notify": {"email": ["x@evil.test"]}}),
        )
        .await;
    // A failing request whose recipient is allowed: that recipient hears of the failure.
    let failing = daemon
        .request(
            "missing_table",
            json!({}),
            json!({"notify": {"email": ["fails@example.org"]}}),
        )
        .await;
    for rid in [&mixed, &unknown] {
        let state = wait_terminal(rid, 60).await;
        assert_eq!(state["error_code"], "recipient_not_allowed", "{state:?}");
        wait_smtp_to(rid, "exports-operator@example.com", 30).await;
    }
    assert_eq!(
        wait_terminal(&failing, 60).await["error_code"],
        "query_failed"
    );
    wait_smtp_to(&failing, "fails@example.org", 30).await;
    // Every mail the worker sent has been accepted by now (each is sent before the message
    // is deleted, and the operator's mail is the last step); read every mailbox.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for rid in [&mixed, &unknown, &failing] {
        for (to, raw) in smtp_mails(rid) {
            assert!(
                !to.contains("evil.test") && !raw.contains("evil.test"),
                "{rid}: mail to {to}"
            );
            assert!(!to.contains("ok-mixed@"), "{rid}: mail to {to}");
        }
    }
    assert_eq!(smtp_mails(&mixed).len(), 1, "only the operator's");
    let failure_mails = smtp_mails(&failing);
    assert_eq!(failure_mails.len(), 1, "only the recipient's");
    // A resend of the same mail would carry the same Message-ID.
    assert!(
        failure_mails[0]
            .1
            .contains(&format!("Message-ID: <{failing}.1.failed@example.com>")),
        "{}",
        failure_mails[0].1
    );
}

#[tokio::test]
async fn exports_over_their_caps_fail_with_a_clear_code() {
    let few_rows = Daemon::start(&[("EXPORT_WORKER__ARCHIVE__MAX_ROWS", "10")]).await;
    let too_many = few_rows
        .request("orders_between", json!({"first": 1, "last": 50}), json!({}))
        .await;
    let fits = few_rows
        .request("orders_between", json!({"first": 1, "last": 10}), json!({}))
        .await;
    let few_bytes =
        Daemon::start(&[("EXPORT_WORKER__ARCHIVE__MAX_UNCOMPRESSED_BYTES", "4000")]).await;
    let mut too_big = Vec::new();
    for layout in ["single", "parts"] {
        too_big.push(
            few_bytes
                .request(
                    "orders_between",
                    json!({"first": 1, "last": 2000}),
                    json!({"layout": layout}),
                )
                .await,
        );
    }
    let state = wait_terminal(&too_many, 60).await;
    assert_eq!(state["error_code"], "export_too_large", "{state:?}");
    assert!(
        state["error_message"].contains("archive.max_rows"),
        "{state:?}"
    );
    assert_eq!(history(&too_many).await, ["QUEUED", "QUERYING", "FAILED"]);
    assert_eq!(wait_terminal(&fits, 60).await["status"], "COMPLETED");
    for rid in &too_big {
        let state = wait_terminal(rid, 60).await;
        assert_eq!(state["error_code"], "export_too_large", "{state:?}");
        assert_eq!(
            history(rid).await,
            ["QUEUED", "QUERYING", "ARCHIVING", "FAILED"]
        );
    }
}

#[tokio::test]
async fn a_message_reusing_a_request_id_never_touches_the_original() {
    let emulator = private_emulator(&["--faults", r#"{"hold_statements": true}"#]).await;
    let daemon = Daemon::start(&[redshift_at(&emulator)]).await;
    let rid = testkit::unique("req");
    let original = json!({"version": 1, "request_id": rid, "query": "product_detail_by_sku",
        "params": {"sku": "FLOWER12"}, "notify": {"email": ["owner@example.com"]}});
    daemon.send(&original.to_string()).await;
    wait_status(&rid, "QUERYING", 60).await;
    // The original's lease lapses, as when its worker stalls: nothing else stood in the way
    // of a second message with the same request id.
    dynamodb()
        .update_item()
        .table_name(var("DEVSTACK_TABLE"))
        .key("request_id", AttributeValue::S(rid.clone()))
        .key("sk", AttributeValue::S("state".into()))
        .update_expression("SET lease_expires_at = :past")
        .expression_attribute_values(":past", AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();
    let before = state(&rid).await.unwrap();
    // Another request under the same id (other parameters, another allowed recipient), and a
    // message naming the id that is not a valid request at all.
    let hijack = json!({"version": 1, "request_id": rid, "query": "product_detail_by_sku",
        "params": {"sku": "OTHER"}, "notify": {"email": ["thief@example.org"]}});
    daemon.send(&hijack.to_string()).await;
    let invalid = json!({"version": 1, "request_id": rid, "query": "q", "surprise": 1});
    daemon.send(&invalid.to_string()).await;

    let mut refused = Vec::new();
    for _ in 0..60 {
        refused.extend(take_messages(&daemon.dlq_url).await);
        if refused.len() >= 2 {
            break;
        }
    }
    refused.sort_by(|a, b| a.1.cmp(&b.1));
    let codes: Vec<&str> = refused.iter().map(|(_, code)| code.as_str()).collect();
    assert_eq!(
        codes,
        ["invalid_message", "request_id_conflict"],
        "{refused:?}"
    );
    assert!(
        refused[1].0.contains("OTHER"),
        "the refused message is forwarded as sent"
    );
    let after = state(&rid).await.unwrap();
    for field in [
        "status",
        "version",
        "fingerprint",
        "request",
        "statement_id",
    ] {
        assert_eq!(after.get(field), before.get(field), "{field} changed");
    }
    assert!(after["request"].contains("FLOWER12"), "{after:?}");

    // The original carries on as if nothing had happened.
    emulator.set_faults("{}").await;
    emulator.admin("POST", "release", "").await;
    let done = wait_terminal(&rid, 60).await;
    assert_eq!(done["status"], "COMPLETED", "{done:?}");
    assert_eq!(done["rows"], "1");
    wait_smtp_to(&rid, "owner@example.com", 30).await;
    assert!(
        smtp_mails(&rid).iter().all(|(to, _)| !to.contains("thief")),
        "the second message's recipient got nothing"
    );
    assert_eq!(
        history(&rid).await,
        ["QUEUED", "QUERYING", "ARCHIVING", "NOTIFYING", "COMPLETED"]
    );
}
