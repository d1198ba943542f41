//! Correct under failure: killed workers, duplicate deliveries, injected AWS faults, hostile
//! messages and bounded concurrency — with real processes against the devstack.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

mod recovery;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;
use testkit::var;

/// Waits until no message is left in the queue, visible or in flight.
async fn wait_queue_drained(queue_url: &str, secs: u64) {
    use aws_sdk_sqs::types::QueueAttributeName::{
        ApproximateNumberOfMessages, ApproximateNumberOfMessagesNotVisible,
    };
    for _ in 0..secs * 2 {
        let out = support::sqs()
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(ApproximateNumberOfMessages)
            .attribute_names(ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
        let attrs = out.attributes.unwrap_or_default();
        let count = |name| {
            attrs
                .get(&name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1)
        };
        if count(ApproximateNumberOfMessages) + count(ApproximateNumberOfMessagesNotVisible) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("messages were still in {queue_url} after {secs} s");
}

#[tokio::test]
async fn the_same_request_twice_is_exported_once_and_emailed_once() {
    // A yielded duplicate comes back after the visibility timeout: keep it short.
    let daemon = Daemon::start(&[("EXPORT_WORKER__QUEUE__VISIBILITY_TIMEOUT_SECS", "30")]).await;
    let rid = testkit::unique("dup");
    let body = json!({"version": 1, "request_id": rid, "query": "orders_between", "params": {"first": 1, "last": 2000}});
    daemon.send(&body.to_string()).await;
    daemon.send(&body.to_string()).await;
    let state = wait_terminal(&rid, 60).await;
    assert_eq!(state["status"], "COMPLETED", "{state:?}");
    // Both deliveries must have been handled and deleted before anything is counted.
    wait_queue_drained(&daemon.queue_url, 120).await;
    assert_eq!(unload_sql(&rid).await.len(), 1, "one UNLOAD");
    assert_eq!(smtp_mails(&rid).len(), 1, "one email");
    assert_eq!(
        history(&rid).await,
        ["QUEUED", "QUERYING", "ARCHIVING", "NOTIFYING", "COMPLETED"]
    );
}

#[tokio::test]
async fn a_worker_killed_while_querying_is_taken_over_without_a_second_unload() {
    let emulator = private_emulator(&["--faults", r#"{"hold_statements": true}"#]).await;
    let overrides = [
        redshift_at(&emulator),
        ("EXPORT_WORKER__QUEUE__VISIBILITY_TIMEOUT_SECS", "30"),
    ];
    let mut first = Daemon::start(&overrides).await;
    let rid = first.request_sku("FLOWER12").await;
    let querying = wait_status(&rid, "QUERYING", 60).await;
    first.signal("KILL");
    first.wait_exit(10).await;
    emulator.set_faults("{}").await;
    let _second = first.another(&overrides);
    let done = wait_terminal(&rid, 90).await;
    assert_eq!(done["status"], "COMPLETED", "{done:?}");
    assert_eq!(
        done["statement_id"], querying["statement_id"],
        "re-attached to the running statement"
    );
    assert_eq!(unloads(&emulator.url, &rid).await, 1, "exactly one UNLOAD");
    assert_eq!(smtp_mails(&rid).len(), 1);
}

#[tokio::test]
async fn a_worker_killed_while_archiving_leaves_one_valid_archive_and_one_email() {
    let overrides = [("EXPORT_WORKER__QUEUE__VISIBILITY_TIMEOUT_SECS", "30")];
    let mut first = Daemon::start(&overrides).await;
    let rid = first
        .request(
            "hashes",
            json!({"rows": 1_500_000}),
            json!({"layout": "single"}),
        )
        .await;
    wait_status(&rid, "ARCHIVING", 120).await;
    first.signal("KILL");
    first.wait_exit(10).await;
    let _second = first.another(&overrides);
    let done = wait_terminal(&rid, 180).await;
    assert_eq!(done["status"], "COMPLETED", "{done:?}");
    assert_eq!(done["rows"], "1500000");
    let (path, _) = download_archive(&done["archive_key"]).await;
    let entries = read_zip(&path);
    assert_eq!(entries.len(), 1);
    assert_eq!(
        csv_records(&entries[0].1).len(),
        1_500_001,
        "header and every row, once"
    );
    assert_eq!(unload_sql(&rid).await.len(), 1);
    assert_eq!(smtp_mails(&rid).len(), 1);
}

#[tokio::test]
async fn injected_throttling_and_server_errors_are_ridden_out() {
    let emulator =
        private_emulator(&["--faults", r#"{"throttle_rate": 0.3, "error_rate": 0.2}"#]).await;
    let daemon = Daemon::start(&[redshift_at(&emulator)]).await;
    let mut rids = Vec::new();
    for sku in ["FLOWER12", "FLOWER13", "FLOWER14"] {
        rids.push(daemon.request_sku(sku).await);
    }
    for rid in &rids {
        let state = wait_terminal(rid, 120).await;
        assert_eq!(state["status"], "COMPLETED", "{rid}: {state:?}");
        assert_eq!(state["rows"], "1");
    }
}

#[tokio::test]
async fn permanent_failures_fail_at_once_and_exhausted_retries_fail_with_their_code() {
    let emulator = private_emulator(&["--faults", r#"{"fail_statements": 1, "fail_message": "ERROR: permission denied for relation product_detail"}"#]).await;
    let daemon = Daemon::start(&[redshift_at(&emulator)]).await;
    let rid = daemon.request_sku("FLOWER12").await;
    let state = wait_terminal(&rid, 60).await;
    assert_eq!(
        (state["status"].as_str(), state["error_code"].as_str()),
        ("FAILED", "query_failed")
    );
    assert_eq!(state["attempt"], "1", "failed on the first attempt");

    let failing = private_emulator(&[
        "--faults",
        r#"{"error_rate": 1.0, "operations": ["ExecuteStatement"]}"#,
    ])
    .await;
    let daemon = Daemon::start(&[
        redshift_at(&failing),
        ("EXPORT_WORKER__WORKER__MAX_ATTEMPTS", "2"),
        ("EXPORT_WORKER__WORKER__STAGE_RETRIES", "0"),
    ])
    .await;
    let rid = daemon.request_sku("FLOWER12").await;
    let state = wait_terminal(&rid, 120).await;
    assert_eq!(
        (state["status"].as_str(), state["error_code"].as_str()),
        ("FAILED", "attempts_exhausted"),
        "{state:?}"
    );
}

/// tests/messages/hostile.jsonl, as tests/message_corpus.rs reads it.
#[derive(Debug, serde::Deserialize)]
struct Case {
    name: String,
    body: String,
    outcome: String,
    rows: Option<u64>,
}

#[tokio::test]
async fn the_hostile_corpus_ends_as_recorded_and_valid_work_goes_on() {
    let (daemon, log) = Daemon::start_logged(&[]).await;
    let admin = admin_address(&log).await;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/messages/hostile.jsonl"
    ))
    .unwrap();
    let cases: Vec<Case> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(cases.len() >= 120);
    let sqs = support::sqs();
    let prefix = &testkit::unique("h")[..14];
    // (case, body as sent, request id it must be recorded under)
    let mut sent = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let rid = format!("{prefix}-{i}");
        let body = case.body.replace("{rid}", &rid);
        let out = sqs
            .send_message()
            .queue_url(&daemon.queue_url)
            .message_body(&body)
            .send()
            .await
            .unwrap();
        let rid = if case.body.contains("{rid}") {
            rid
        } else {
            out.message_id.unwrap()
        };
        sent.push((case, body, rid));
    }
    let valid = daemon.request_sku("FLOWER14").await;

    let expected_dlq: Vec<_> = sent
        .iter()
        .filter(|(c, _, _)| c.outcome.starts_with("DLQ "))
        .collect();
    let mut dead: Vec<(String, String)> = Vec::new();
    for _ in 0..120 {
        dead.extend(take_messages(&daemon.dlq_url).await);
        if dead.len() >= expected_dlq.len() {
            break;
        }
    }
    assert_eq!(dead.len(), expected_dlq.len(), "dead-lettered: {dead:?}");
    for (case, body, _) in &expected_dlq {
        let code = &case.outcome["DLQ ".len()..];
        assert!(
            dead.iter().any(|(b, c)| b == body && c == code),
            "{}: not in the dead-letter queue with {code}",
            case.name
        );
    }
    for (case, _, rid) in &sent {
        if case.outcome.starts_with("DLQ ") {
            assert!(state(rid).await.is_none(), "{}: recorded", case.name);
            continue;
        }
        let state = wait_terminal(rid, 180).await;
        if case.outcome == "COMPLETED" {
            assert_eq!(state["status"], "COMPLETED", "{}: {state:?}", case.name);
            assert_eq!(
                state["rows"],
                case.rows.unwrap().to_string(),
                "{}",
                case.name
            );
        } else {
            let code = case.outcome.strip_prefix("FAILED ").unwrap();
            assert_eq!(state["status"], "FAILED", "{}: {state:?}", case.name);
            assert_eq!(state["error_code"], code, "{}: {state:?}", case.name);
            if code != "query_failed" {
                assert!(unload_sql(rid).await.is_empty(), "{}: SQL ran", case.name);
            }
        }
        assert!(
            smtp_mails(rid)
                .iter()
                .all(|(to, _)| !to.contains("evil.test")),
            "{}: mail outside the allow-list",
            case.name
        );
    }
    assert_eq!(
        wait_terminal(&valid, 180).await["status"],
        "COMPLETED",
        "valid work carried on"
    );
    let sum = |family: &'static str| {
        let admin = admin.clone();
        async move {
            let (_, text) = testkit::http("GET", &format!("http://{admin}/metrics"), "").await;
            text.lines()
                .filter(|l| l.starts_with(family))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as usize
        }
    };
    assert_eq!(
        sum("redshift_export_messages_dead_lettered_total{").await,
        expected_dlq.len()
    );
    assert_eq!(
        sum("redshift_export_messages_received_total").await,
        cases.len() + 1,
        "each message received once"
    );
}

#[tokio::test]
async fn three_slots_run_three_statements_at_once_and_finish_about_three_times_sooner() {
    let mut elapsed = Vec::new();
    for slots in ["1", "3"] {
        let emulator = private_emulator(&["--step-delay-ms", "600"]).await;
        let daemon = Daemon::start(&[
            redshift_at(&emulator),
            ("EXPORT_WORKER__WORKER__MAX_CONCURRENT_JOBS", slots),
        ])
        .await;
        let started = Instant::now();
        let mut rids = Vec::new();
        for _ in 0..6 {
            rids.push(daemon.request_sku("FLOWER12").await);
        }
        for rid in &rids {
            assert_eq!(wait_terminal(rid, 120).await["status"], "COMPLETED");
        }
        elapsed.push(started.elapsed());
        let (_, stats) = emulator.admin("GET", "stats", "").await;
        let stats: Value = serde_json::from_str(&stats).unwrap();
        assert_eq!(
            stats["max_running"],
            slots.parse::<u64>().unwrap(),
            "statements at once with {slots} slots"
        );
    }
    let ratio = elapsed[0].as_secs_f64() / elapsed[1].as_secs_f64();
    assert!(
        ratio > 2.0,
        "3 slots were only {ratio:.1}× faster than 1 ({elapsed:?})"
    );
}

#[tokio::test]
async fn failures_injected_in_front_of_moto_are_ridden_out() {
    // SQS, S3, DynamoDB and SES all go through the proxy, which fails one request in five,
    // and always the first call of each operation below, so that every service's retry is
    // exercised whatever the dice say.
    const FIRST_FAILING: [&str; 7] = [
        "ReceiveMessage",
        "DeleteMessage",
        "TransactWriteItems",
        "ListObjectsV2",
        "GetObject",
        "PutObject",
        "SendEmail",
    ];
    let proxy = testkit::FaultProxy::start_with(
        &var("AWS_ENDPOINT_URL"),
        testkit::Faults {
            fail: 0.2,
            fail_first: FIRST_FAILING.map(String::from).to_vec(),
            ..testkit::Faults::default()
        },
    )
    .await;
    let endpoints = [
        ("EXPORT_WORKER__AWS__ENDPOINTS__SQS", proxy.url.as_str()),
        ("EXPORT_WORKER__AWS__ENDPOINTS__S3", proxy.url.as_str()),
        (
            "EXPORT_WORKER__AWS__ENDPOINTS__DYNAMODB",
            proxy.url.as_str(),
        ),
        ("EXPORT_WORKER__AWS__ENDPOINTS__SESV2", proxy.url.as_str()),
        ("EXPORT_WORKER__EMAIL__TRANSPORT", "ses"),
    ];
    let daemon = Daemon::start(&endpoints).await;
    let mut rids = Vec::new();
    for (first, last) in [(1, 500), (501, 1500), (1501, 1600)] {
        rids.push(
            daemon
                .request(
                    "orders_between",
                    json!({"first": first, "last": last}),
                    json!({}),
                )
                .await,
        );
    }
    for (rid, rows) in rids.iter().zip(["500", "1000", "100"]) {
        let state = wait_terminal(rid, 180).await;
        assert_eq!(state["status"], "COMPLETED", "{rid}: {state:?}");
        assert_eq!(state["rows"], rows);
        let (path, _) = download_archive(&state["archive_key"]).await;
        assert_eq!(
            csv_records(&read_zip(&path)[0].1).len(),
            rows.parse::<usize>().unwrap() + 1
        );
        assert_eq!(
            unload_sql(rid).await.len(),
            1,
            "one UNLOAD despite the retries"
        );
    }
    let injected = proxy.injected_by_operation();
    for operation in FIRST_FAILING {
        assert!(
            injected.get(operation).copied().unwrap_or(0) >= 1,
            "no {operation} failed: {injected:?}"
        );
    }
}
