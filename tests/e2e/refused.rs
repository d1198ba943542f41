//! What must not be exported: invalid and hostile requests, database errors, timeouts, caps,
//! recipients outside the allow-list and reused request ids — each ends recorded and explained.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::json;
use testkit::var;

use crate::support::{self, *};

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
