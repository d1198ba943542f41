//! Recovery of what a failure left behind: lost responses, requests whose message is gone,
//! state items this version cannot read, a cancel between stages.

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::json;
use testkit::var;

use crate::support::*;

#[tokio::test]
async fn lost_responses_cost_no_redelivery() {
    // A good share of the responses of DynamoDB's transitions, claims and lease calls are
    // lost after the write was made (some by a cut connection), and most of S3's
    // CompleteMultipartUpload and PutObject: the worker must recognise its own writes instead
    // of giving the request up until the message comes back. Small archives go up with one
    // PutObject; the `hashes` export is large enough for a multipart upload of 5 MiB parts.
    let dynamodb = testkit::FaultProxy::start_with(
        &var("AWS_ENDPOINT_URL"),
        testkit::Faults {
            lose: 0.4,
            drop: 0.15,
            only: ["TransactWriteItems", "UpdateItem"]
                .map(String::from)
                .to_vec(),
            lose_first: ["TransactWriteItems", "UpdateItem"]
                .map(String::from)
                .to_vec(),
            ..testkit::Faults::default()
        },
    )
    .await;
    let s3 = testkit::FaultProxy::start_with(
        &var("AWS_ENDPOINT_URL"),
        testkit::Faults {
            lose: 0.9,
            only: vec!["CompleteMultipartUpload".into(), "PutObject".into()],
            lose_first: vec!["CompleteMultipartUpload".into(), "PutObject".into()],
            ..testkit::Faults::default()
        },
    )
    .await;
    let overrides = [
        ("EXPORT_WORKER__AWS__ENDPOINTS__S3", s3.url.as_str()),
        (
            "EXPORT_WORKER__AWS__ENDPOINTS__DYNAMODB",
            dynamodb.url.as_str(),
        ),
        // A redelivery would show as a second receive of the same message.
        ("EXPORT_WORKER__WORKER__RETRY_DELAY_SECS", "1"),
        ("EXPORT_WORKER__ARCHIVE__PART_SIZE_MIB", "5"),
    ];
    let (daemon, log) = Daemon::start_logged(&overrides).await;
    let admin = admin_address(&log).await;
    let mut rids = Vec::new();
    for (first, last, layout) in [
        (1, 300, "single"),
        (301, 900, "parts"),
        (901, 1000, "single"),
        (1001, 1200, "parts"),
    ] {
        rids.push((
            daemon
                .request(
                    "orders_between",
                    json!({"first": first, "last": last}),
                    json!({"layout": layout}),
                )
                .await,
            last - first + 1,
        ));
    }
    rids.push((
        daemon
            .request(
                "hashes",
                json!({"rows": 250_000}),
                json!({"layout": "single"}),
            )
            .await,
        250_000,
    ));
    // A new request is created leased to its job; one already recorded (here by hand, as a
    // redelivery finds it) is claimed with UpdateItem, whose response is lost too.
    rids.push((recorded_then_sent(&daemon, 1201, 1250).await, 50));
    for (rid, rows) in &rids {
        let state = wait_terminal(rid, 120).await;
        assert_eq!(state["status"], "COMPLETED", "{rid}: {state:?}");
        assert_eq!(state["rows"], rows.to_string());
        let (path, _) = download_archive(&state["archive_key"]).await;
        let records: usize = read_zip(&path)
            .iter()
            .map(|(_, text)| csv_records(text).len() - 1)
            .sum();
        assert_eq!(records, *rows as usize);
        assert_eq!(unload_sql(rid).await.len(), 1, "one UNLOAD");
        assert_eq!(smtp_mails(rid).len(), 1, "one email");
        assert_eq!(
            history(rid).await,
            ["QUEUED", "QUERYING", "ARCHIVING", "NOTIFYING", "COMPLETED"]
        );
    }
    let mut lost = dynamodb.lost();
    lost.extend(s3.lost());
    for op in [
        "TransactWriteItems",
        "UpdateItem",
        "CompleteMultipartUpload",
        "PutObject",
    ] {
        assert!(
            lost.get(op).copied().unwrap_or(0) > 0,
            "no lost {op} response: {lost:?}"
        );
    }
    assert_eq!(
        metric(&admin, "redshift_export_messages_received_total").await,
        rids.len() as f64,
        "each message received once: no request waited for a redelivery ({lost:?})"
    );
}

#[tokio::test]
async fn calls_that_are_never_answered_time_out_and_the_export_goes_on() {
    // The first call of each operation below is carried out and then never answered, the
    // connection left open and silent: without a timeout per attempt the job would wait for
    // ever, renewing the request's lease as it waited. With `aws.attempt_timeout_secs` each
    // such call is abandoned, retried by the SDK, and recognised as done where it was.
    let hang = |ops: &[&str]| testkit::Faults {
        hang_first: ops.iter().map(|op| op.to_string()).collect(),
        ..testkit::Faults::default()
    };
    let aws = testkit::FaultProxy::start_with(
        &var("AWS_ENDPOINT_URL"),
        hang(&["TransactWriteItems", "GetObject", "PutObject"]),
    )
    .await;
    let data_api = testkit::FaultProxy::start_with(
        &var("AWS_ENDPOINT_URL_REDSHIFT_DATA"),
        hang(&["ExecuteStatement", "DescribeStatement"]),
    )
    .await;
    let overrides = [
        ("EXPORT_WORKER__AWS__ENDPOINTS__S3", aws.url.as_str()),
        ("EXPORT_WORKER__AWS__ENDPOINTS__DYNAMODB", aws.url.as_str()),
        (
            "EXPORT_WORKER__AWS__ENDPOINTS__REDSHIFT_DATA",
            data_api.url.as_str(),
        ),
        ("EXPORT_WORKER__AWS__ATTEMPT_TIMEOUT_SECS", "2"),
        ("EXPORT_WORKER__ARCHIVE__PART_SIZE_MIB", "5"),
        ("EXPORT_WORKER__WORKER__RETRY_DELAY_SECS", "1"),
    ];
    let (daemon, log) = Daemon::start_logged(&overrides).await;
    let admin = admin_address(&log).await;
    let rid = daemon
        .request(
            "orders_between",
            json!({"first": 1, "last": 400}),
            json!({}),
        )
        .await;
    let state = wait_terminal(&rid, 120).await;
    assert_eq!(state["status"], "COMPLETED", "{rid}: {state:?}");
    assert_eq!(state["rows"], "400");
    let (path, _) = download_archive(&state["archive_key"]).await;
    assert_eq!(csv_records(&read_zip(&path)[0].1).len(), 401);
    assert_eq!(unload_sql(&rid).await.len(), 1, "one UNLOAD");
    assert_eq!(smtp_mails(&rid).len(), 1, "one email");
    assert_eq!(
        history(&rid).await,
        ["QUEUED", "QUERYING", "ARCHIVING", "NOTIFYING", "COMPLETED"]
    );
    let mut unanswered = aws.unanswered();
    unanswered.extend(data_api.unanswered());
    for op in [
        "TransactWriteItems",
        "GetObject",
        "PutObject",
        "ExecuteStatement",
        "DescribeStatement",
    ] {
        assert_eq!(
            unanswered.get(op).copied(),
            Some(1),
            "{op} was not left unanswered: {unanswered:?}"
        );
    }
    assert_eq!(
        metric(&admin, "redshift_export_messages_received_total").await,
        1.0,
        "the message was received once: each call was retried in place"
    );
}

/// Records an `orders_between` request in QUEUED with no lease, as a worker that died right
/// after creating it leaves it, then sends its message; returns its request id.
async fn recorded_then_sent(daemon: &Daemon, first: u32, last: u32) -> String {
    use redshift_export_worker::message::{self, CompatSettings};
    use redshift_export_worker::state::StateStore;
    let rid = testkit::unique("req");
    let body = json!({"version": 1, "request_id": rid, "query": "orders_between",
                      "params": {"first": first, "last": last}})
    .to_string();
    let request = message::parse(
        body.as_bytes(),
        "unused",
        256 * 1024,
        &CompatSettings::default(),
    )
    .unwrap();
    let store = StateStore::new(dynamodb(), var("DEVSTACK_TABLE"), 1, "test-worker".into());
    store
        .create_or_load(
            &request.request_id,
            request.query_name(),
            None,
            &request.fingerprinted(),
            None,
        )
        .await
        .unwrap();
    daemon.send(&body).await;
    rid
}

/// Makes `rid` look lost for longer than any sweeper.idle_secs: it last moved long ago, its
/// lease lapsed, and it was already sent again `redrives` times.
async fn age(rid: &str, redrives: u32) {
    dynamodb()
        .update_item()
        .table_name(var("DEVSTACK_TABLE"))
        .key("request_id", AttributeValue::S(rid.into()))
        .key("sk", AttributeValue::S("state".into()))
        .update_expression(
            "SET updated_at = :long_ago, lease_expires_at = :lapsed, redrives = :redrives",
        )
        .expression_attribute_values(
            ":long_ago",
            AttributeValue::S("2000-01-01T00:00:00.000000Z".into()),
        )
        .expression_attribute_values(":lapsed", AttributeValue::N("1".into()))
        .expression_attribute_values(":redrives", AttributeValue::N(redrives.to_string()))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn requests_whose_message_is_gone_are_sent_again_or_fail_orphaned() {
    // One test, one sweeping daemon: sweepers act on the whole table, and each test daemon
    // has a queue of its own.
    let emulator = private_emulator(&["--faults", r#"{"hold_statements": true}"#]).await;
    let overrides = [
        redshift_at(&emulator),
        ("EXPORT_WORKER__SWEEPER__ENABLED", "true"),
        ("EXPORT_WORKER__SWEEPER__INTERVAL_SECS", "1"),
        ("EXPORT_WORKER__SWEEPER__MAX_REDRIVES", "1"),
    ];
    let mut first = Daemon::start(&overrides).await;
    let resumed = first.request_sku("FLOWER12").await;
    let given_up = first.request_sku("FLOWER12").await;
    let querying = wait_status(&resumed, "QUERYING", 60).await;
    wait_status(&given_up, "QUERYING", 60).await;
    // The worker dies and the messages are gone (deleted by hand, expired, or moved to the
    // dead-letter queue by the queue's own redrive): the next worker listens on a queue of
    // its own, where they never were.
    first.signal("KILL");
    first.wait_exit(10).await;
    age(&resumed, 0).await;
    age(&given_up, 1).await;
    emulator.set_faults("{}").await;
    emulator.admin("POST", "release", "").await;
    let _sweeping = Daemon::start(&overrides).await;

    let done = wait_terminal(&resumed, 60).await;
    assert_eq!(done["status"], "COMPLETED", "{done:?}");
    assert_eq!(done["redrives"], "1");
    assert_eq!(
        done["statement_id"], querying["statement_id"],
        "re-attached"
    );
    assert_eq!(
        unloads(&emulator.url, &resumed).await,
        1,
        "exactly one UNLOAD"
    );
    assert_eq!(smtp_mails(&resumed).len(), 1, "one email");
    assert_eq!(
        history(&resumed).await,
        [
            "QUEUED",
            "QUERYING",
            "QUERYING",
            "ARCHIVING",
            "NOTIFYING",
            "COMPLETED"
        ],
        "the re-drive is in the history"
    );
    assert!(!done.contains_key("open_shard"), "out of the open index");

    let failed = wait_terminal(&given_up, 60).await;
    assert_eq!(failed["status"], "FAILED", "{failed:?}");
    assert_eq!(failed["error_code"], "orphaned");
    assert!(!failed.contains_key("open_shard"), "out of the open index");
    // Its recipients (the configured default, allow-listed) hear of it.
    wait_smtp_to(&given_up, "partner@example.com", 30).await;
    let mail = smtp_mail(&given_up).await;
    let text = mail["text"].as_str().unwrap();
    assert!(text.contains("could not be resumed"), "{text}");
}

#[tokio::test]
async fn a_state_item_this_version_cannot_read_is_left_alone_and_its_message_dead_lettered() {
    let daemon = Daemon::start(&[
        ("EXPORT_WORKER__WORKER__MAX_ATTEMPTS", "2"),
        ("EXPORT_WORKER__WORKER__RETRY_DELAY_SECS", "0"),
    ])
    .await;
    // As a newer version might write it during a rolling upgrade.
    let rid = testkit::unique("unreadable");
    dynamodb()
        .put_item()
        .table_name(var("DEVSTACK_TABLE"))
        .item("request_id", AttributeValue::S(rid.clone()))
        .item("sk", AttributeValue::S("state".into()))
        .item("status", AttributeValue::S("PAUSED".into()))
        .item("version", AttributeValue::N("3".into()))
        .send()
        .await
        .unwrap();
    daemon
        .send(
            &json!({
                "version": 1,
                "request_id": rid,
                "query": "product_detail_by_sku",
                "params": {"sku": "FLOWER12"},
            })
            .to_string(),
        )
        .await;
    let mut dead = Vec::new();
    for _ in 0..60 {
        dead.extend(take_messages(&daemon.dlq_url).await);
        if !dead.is_empty() {
            break;
        }
    }
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].1, "unreadable_state");
    assert!(dead[0].0.contains(&rid));
    let item = state(&rid).await.unwrap();
    assert_eq!(
        item["status"], "PAUSED",
        "the item is left as it was: {item:?}"
    );
    assert_eq!(item["version"], "3");
}

#[tokio::test]
async fn a_cancel_asked_between_stages_stops_the_next_transition_but_not_the_end() {
    use redshift_export_worker::error::JobError;
    use redshift_export_worker::message::{Fingerprinted, RequestId};
    use redshift_export_worker::state::{StateStore, Status};
    let store = StateStore::new(dynamodb(), var("DEVSTACK_TABLE"), 1, "test-worker".into());
    let rid = RequestId::parse(&format!("req-{}", uuid::Uuid::new_v4().simple())).unwrap();
    let asked = Fingerprinted {
        canonical: "{}".into(),
        fingerprint: "cancel-test".into(),
    };
    let item = store
        .create_or_load(&rid, "sample", None, &asked, None)
        .await
        .unwrap();
    // The worker holds `item` (not cancelled) when the cancel arrives: no read before the next
    // stage sees it, the transition's condition does.
    store.request_cancel(rid.as_str()).await.unwrap();
    let refused = store
        .transition(&item, Status::Querying, |_| {}, "statement submitted")
        .await
        .unwrap_err();
    assert!(matches!(refused, JobError::Cancelled), "{refused:?}");
    let ended = store
        .transition(&item, Status::Cancelled, |_| {}, "cancelled")
        .await
        .unwrap();
    assert_eq!(ended.status, Status::Cancelled);
    assert_eq!(
        history(rid.as_str()).await,
        ["QUEUED", "CANCELLED"],
        "the refused step left nothing behind"
    );
}
