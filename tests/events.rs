//! Completion events end to end: the real binary against the devstack's SQS and SNS (moto, a
//! queue subscribed to the topic) and its HTTPS webhook sink, which checks every signature.
//! Each test has queues and a topic of its own; the sink's deliveries are told apart by
//! request id.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::Digest;
use support::*;
use testkit::{sdk_config, var};

fn sns() -> aws_sdk_sns::Client {
    aws_sdk_sns::Client::new(&sdk_config(&var("AWS_ENDPOINT_URL")))
}

/// A queue of this test's own: its URL.
async fn own_queue(label: &str) -> String {
    sqs()
        .create_queue()
        .queue_name(testkit::unique(label))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap()
}

/// A topic of this test's own with a queue subscribed (raw delivery): (topic ARN, queue URL).
async fn own_topic() -> (String, String) {
    let topic = sns()
        .create_topic()
        .name(testkit::unique("events"))
        .send()
        .await
        .unwrap()
        .topic_arn
        .unwrap();
    let queue = own_queue("subscriber").await;
    let arn = queue_arn(&queue).await;
    sns()
        .subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .unwrap();
    (topic, queue)
}

/// Waits (at most `secs`) for one message in `queue` and returns it as JSON.
async fn wait_event(queue: &str, secs: u64) -> Value {
    for _ in 0..secs {
        let got = take_messages(queue).await;
        if let Some((body, _)) = got.first() {
            assert_eq!(got.len(), 1, "one event: {got:?}");
            return serde_json::from_str(body).unwrap();
        }
    }
    panic!("no event in {queue} within {secs} s");
}

/// Waits (at most `secs`) until the request has ended and told its destinations.
async fn wait_told(rid: &str, secs: u64) -> HashMap<String, String> {
    for _ in 0..secs * 10 {
        if let Some(s) = state(rid).await
            && matches!(
                s.get("status").map(String::as_str),
                Some("COMPLETED" | "FAILED" | "CANCELLED")
            )
            && !s.contains_key("events_due")
        {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "request {rid} did not end and tell its destinations within {secs} s: {:?}",
        state(rid).await
    );
}

fn overrides(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn details(history: &[(String, String)]) -> Vec<&str> {
    history.iter().map(|(_, d)| d.as_str()).collect()
}

#[tokio::test]
async fn a_completed_export_is_announced_to_a_queue_a_topic_and_a_signed_webhook() {
    let replies = own_queue("replies").await;
    let (topic, subscriber) = own_topic().await;
    let mut env = webhook("partner_a", "/hooks/partner-a");
    env.push((
        "EXPORT_WORKER__EVENTS__DESTINATIONS__REPLIES__QUEUE_URL".into(),
        replies.clone(),
    ));
    env.push((
        "EXPORT_WORKER__EVENTS__DESTINATIONS__TOPIC__TOPIC_ARN".into(),
        topic,
    ));
    let daemon = Daemon::start(&overrides(&env)).await;
    let rid = daemon
        .request(
            "orders_between",
            json!({"first": 1, "last": 3000}),
            json!({"layout": "parts", "notify": {"events": ["replies", "topic", "partner_a"]}}),
        )
        .await;
    let state = wait_told(&rid, 90).await;
    assert_eq!(state["status"], "COMPLETED", "{state:?}");

    // The same event, once, at each destination.
    let from_queue = wait_event(&replies, 20).await;
    let from_topic = wait_event(&subscriber, 20).await;
    let hooks = webhook_deliveries(&rid);
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0]["status"], 200, "{hooks:?}");
    assert_eq!(
        hooks[0]["verified"], true,
        "the sink verified the signature"
    );
    assert_eq!(hooks[0]["event_id"], from_queue["event_id"]);
    let from_hook = &hooks[0]["body"];
    assert_eq!(&from_queue, from_hook);
    assert_eq!(from_queue, from_topic);
    let event = from_queue;
    assert_eq!(event_schema_errors(&event), Vec::<String>::new(), "{event}");
    assert_eq!(event["request_id"], rid);
    assert_eq!(event["status"], "COMPLETED");
    assert_eq!(event["rows"], 3000);
    assert!(event["link"].as_str().unwrap().contains(&rid));

    // What the event says of the archive is what the archive is.
    let (path, bytes) = download_archive(&state["archive_key"]).await;
    let sha: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(event["archive"]["sha256"], sha);
    assert_eq!(event["archive_bytes"], bytes.len());
    let entries = event["archive"]["entries"].as_array().unwrap();
    let unpacked = read_zip(&path);
    assert!(unpacked.len() > 1, "several parts: {}", unpacked.len());
    assert_eq!(entries.len(), unpacked.len());
    let mut rows = 0;
    for (entry, (name, text)) in entries.iter().zip(&unpacked) {
        assert_eq!(entry["name"], *name);
        assert_eq!(entry["crc32"], crc32fast::hash(text.as_bytes()));
        assert_eq!(entry["bytes"], text.len());
        // Each part has its header line.
        assert_eq!(entry["rows"], csv_records(text).len() - 1, "{name}");
        rows += entry["rows"].as_u64().unwrap();
    }
    assert_eq!(rows, 3000);

    // Events only: no email; the history says who was told.
    assert!(smtp_mails(&rid).is_empty(), "no email was asked for");
    let history = history_details(&rid).await;
    for told in [
        "event sent to partner_a",
        "event sent to replies",
        "event sent to topic",
    ] {
        assert!(details(&history).contains(&told), "{history:?}");
    }
    assert!(
        details(&history).contains(&"completed; no email asked for"),
        "{history:?}"
    );
}

#[tokio::test]
async fn a_failed_request_is_announced_and_a_flaky_webhook_gets_it_on_a_retry() {
    let replies = own_queue("replies").await;
    let mut env = webhook("flaky", "/hooks/flaky");
    env.push((
        "EXPORT_WORKER__EVENTS__DESTINATIONS__REPLIES__QUEUE_URL".into(),
        replies.clone(),
    ));
    // Every event goes to the reply queue, whatever the request names.
    env.push(("EXPORT_WORKER__EVENTS__DEFAULT".into(), "replies".into()));
    let (daemon, log) = Daemon::start_logged(&overrides(&env)).await;
    let admin = admin_address(&log).await;
    let rid = daemon
        .request(
            "missing_table",
            json!({}),
            json!({"notify": {"email": ["partner@example.com"], "events": ["flaky"]}}),
        )
        .await;
    let state = wait_told(&rid, 60).await;
    assert_eq!(state["status"], "FAILED", "{state:?}");

    let event = wait_event(&replies, 20).await;
    assert_eq!(event_schema_errors(&event), Vec::<String>::new(), "{event}");
    assert_eq!(event["status"], "FAILED");
    assert_eq!(event["error_code"], "query_failed");
    assert!(!event["reason"].as_str().unwrap().is_empty());
    assert!(event.get("link").is_none(), "no link for a failure");

    // The flaky receiver refused the first delivery; the retry carried the same event.
    let hooks = webhook_deliveries(&rid);
    let statuses: Vec<&Value> = hooks.iter().map(|h| &h["status"]).collect();
    assert_eq!(statuses, [&json!(503), &json!(200)], "{hooks:?}");
    assert_eq!(hooks[0]["event_id"], hooks[1]["event_id"]);
    assert_eq!(hooks[1]["body"], event);
    assert_eq!(
        metric(
            &admin,
            "redshift_export_events_total{destination=\"flaky\",outcome=\"retried\"}"
        )
        .await,
        1.0
    );
    let history = history_details(&rid).await;
    assert!(
        details(&history).contains(&"event sent to flaky"),
        "{history:?}"
    );
    // Email is still sent when asked for.
    wait_smtp_to(&rid, "partner@example.com", 10).await;
}

#[tokio::test]
async fn undeliverable_webhooks_leave_the_request_completed_and_say_why() {
    let mut env = webhook("down", "/hooks/fail");
    env.extend(webhook("moved", "/hooks/redirect"));
    env.extend(webhook("forged", "/hooks/partner-a"));
    // This daemon signs with another secret than the receiver checks.
    env.retain(|(k, _)| k != "DEVSTACK_WEBHOOK_SECRET");
    env.push(("EXPORT_WORKER__EVENTS__MAX_ATTEMPTS".into(), "2".into()));
    env.push((
        "EXPORT_WORKER__EVENTS__DESTINATIONS__FORGED__SECRET_ENV".into(),
        "OTHER_SECRET".into(),
    ));
    env.push(("OTHER_SECRET".into(), "not-the-receivers-secret".into()));
    env.push((
        "EXPORT_WORKER__EVENTS__DESTINATIONS__DOWN__SECRET_ENV".into(),
        "OTHER_SECRET".into(),
    ));
    env.push((
        "EXPORT_WORKER__EVENTS__DESTINATIONS__MOVED__SECRET_ENV".into(),
        "OTHER_SECRET".into(),
    ));
    let (daemon, log) = Daemon::start_logged(&overrides(&env)).await;
    let admin = admin_address(&log).await;
    let rid = daemon
        .request_with(json!({"events": ["down", "moved", "forged"]}))
        .await;
    let state = wait_told(&rid, 60).await;
    assert_eq!(state["status"], "COMPLETED", "{state:?}");
    let history = history_details(&rid).await;
    let said = details(&history);
    let has = |text: &str| said.iter().any(|d| d.contains(text));
    assert!(has("event to down not delivered: HTTP 503"), "{history:?}");
    assert!(has("(after 2 attempts)"), "{history:?}");
    assert!(
        has("event to moved not delivered: HTTP 302: redirects are not followed"),
        "{history:?}"
    );
    assert!(
        has("event to forged not delivered: HTTP 401"),
        "{history:?}"
    );
    // Retried only where retrying can help: the 503, not the redirect or the refusal.
    let hooks = webhook_deliveries(&rid);
    let at = |path: &str| hooks.iter().filter(|h| h["path"] == path).count();
    assert_eq!(
        (
            at("/hooks/fail"),
            at("/hooks/redirect"),
            at("/hooks/partner-a")
        ),
        (2, 1, 1)
    );
    assert!(
        hooks.iter().all(|h| h["path"] != "/hooks/ok"),
        "no redirect followed"
    );
    assert_eq!(
        hooks
            .iter()
            .find(|h| h["path"] == "/hooks/partner-a")
            .unwrap()["verified"],
        false
    );
    assert_eq!(
        metric(&admin, "redshift_export_events_undelivered_total").await,
        3.0
    );
}

#[tokio::test]
async fn events_owed_by_a_worker_that_died_are_sent_when_the_message_comes_back() {
    let replies = own_queue("replies").await;
    let env = [(
        "EXPORT_WORKER__EVENTS__DESTINATIONS__REPLIES__QUEUE_URL".to_string(),
        replies.clone(),
    )];
    let daemon = Daemon::start(&overrides(&env)).await;
    let rid = daemon.request_with(json!({"events": ["replies"]})).await;
    wait_told(&rid, 60).await;
    let first = wait_event(&replies, 20).await;

    // As if the worker had died right after recording COMPLETED: the outbox is back, and the
    // message comes again (SQS redelivers what was not deleted).
    dynamodb()
        .update_item()
        .table_name(var("DEVSTACK_TABLE"))
        .key(
            "request_id",
            aws_sdk_dynamodb::types::AttributeValue::S(rid.clone()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("state".into()),
        )
        .update_expression("SET events_due = :due")
        .expression_attribute_values(
            ":due",
            aws_sdk_dynamodb::types::AttributeValue::Ss(vec!["replies".into()]),
        )
        .send()
        .await
        .unwrap();
    daemon
        .send(
            &json!({"version": 1, "request_id": rid, "query": "orders_between",
                    "params": {"first": 1, "last": 10}, "notify": {"events": ["replies"]}})
            .to_string(),
        )
        .await;
    wait_told(&rid, 30).await;
    let again = wait_event(&replies, 20).await;
    assert_eq!(
        again["event_id"], first["event_id"],
        "receivers can deduplicate it"
    );
    assert_eq!(again["archive"], first["archive"]);
    let sent = history_details(&rid)
        .await
        .iter()
        .filter(|(_, d)| d == "event sent to replies")
        .count();
    assert_eq!(sent, 2);
}

#[tokio::test]
async fn the_sweeper_tells_the_destinations_of_a_request_that_ended_without_its_message() {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    // A table of this test's own: its sweeper must see only this request.
    let table = new_state_table().await;
    let rid = testkit::unique("orphan");
    // Ended by `dlq fail` or by a sweeper whose process then died: FAILED, events still due,
    // still in the open-requests index, idle for long, and no message anywhere.
    let hex: String = sha2::Sha256::digest(rid.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let shard = u32::from_str_radix(&hex[..2], 16).unwrap() % 8;
    let long_ago = "2000-01-01T00:00:00.000000Z";
    let item = [
        ("request_id", A::S(rid.clone())),
        ("sk", A::S("state".into())),
        ("status", A::S("FAILED".into())),
        ("version", A::N("4".into())),
        ("attempt", A::N("1".into())),
        ("query", A::S("orders_between".into())),
        ("created_at", A::S(long_ago.into())),
        ("updated_at", A::S(long_ago.into())),
        ("error_code", A::S("dead_lettered".into())),
        (
            "error_message",
            A::S("an operator gave the request up".into()),
        ),
        ("events_due", A::Ss(vec!["replies".into()])),
        ("open_shard", A::S(format!("open-{shard}"))),
    ];
    dynamodb()
        .put_item()
        .table_name(&table)
        .set_item(Some(
            item.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        ))
        .send()
        .await
        .unwrap();
    let replies = own_queue("replies").await;
    let _sweeping = Daemon::start(&[
        ("EXPORT_WORKER__STATE__TABLE", table.as_str()),
        ("EXPORT_WORKER__SWEEPER__ENABLED", "true"),
        ("EXPORT_WORKER__SWEEPER__INTERVAL_SECS", "1"),
        (
            "EXPORT_WORKER__EVENTS__DESTINATIONS__REPLIES__QUEUE_URL",
            replies.as_str(),
        ),
    ])
    .await;
    let event = wait_event(&replies, 30).await;
    assert_eq!(event_schema_errors(&event), Vec::<String>::new(), "{event}");
    assert_eq!(event["request_id"], rid);
    assert_eq!(event["status"], "FAILED");
    assert_eq!(event["error_code"], "dead_lettered");
    for _ in 0..50 {
        let state = state_in(&table, &rid).await.unwrap();
        if !state.contains_key("events_due") {
            assert!(!state.contains_key("open_shard"), "out of the open index");
            assert_eq!(history_in(&table, &rid).await, ["FAILED"]);
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the outbox was not cleared");
}
