//! Chaos: several workers on one queue, one of them SIGKILLed and restarted every few
//! seconds, every AWS service behind a proxy that fails requests, loses responses after the
//! write and cuts connections, the Data API throttling and failing, mixed templates, layouts
//! and formats (CSV, JSON, Parquet), and duplicate deliveries, under a fleet-wide cap of two running statements.
//! Whatever happens, every request must end COMPLETED, exported by exactly one UNLOAD into one
//! archive whose rows are the source's, with the queues empty, duplicate emails rare, the
//! emulator never running more statements than the cap, and no statement slot left held.
//!
//! CI runs it small (the defaults below); `scripts/chaos` runs it at full size and
//! docs/RELIABILITY.md records the figures. Sizes come from the environment:
//! CHAOS_REQUESTS, CHAOS_WORKERS, CHAOS_SECS (how long workers are killed), CHAOS_KILL_MS
//! ("min-max" between kills), CHAOS_SES_LOSE (share of SendEmail responses lost),
//! CHAOS_REPORT (a file for the figures, as JSON).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;
use testkit::{FaultProxy, Faults, var};

/// The fleet-wide cap on running statements the workers share.
const STATEMENT_CAP: &str = "2";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One request of the mix: its body and the data rows it must export.
fn mix(i: usize, rid: &str) -> (Value, u64) {
    // Parquet only where the layout is `parts` (odd i).
    let format = match (i % 5, i % 10) {
        (4, _) => "json",
        (_, 7) => "parquet",
        _ => "csv",
    };
    let layout = if i.is_multiple_of(2) {
        "single"
    } else {
        "parts"
    };
    let (query, params, rows) = match i % 4 {
        0 => ("product_detail_by_sku", json!({"sku": "FLOWER12"}), 1),
        1 => {
            let first = (i % 50) as u64 * 20 + 1;
            let last = first + (i % 7) as u64 * 150;
            (
                "orders_between",
                json!({"first": first, "last": last}),
                last - first + 1,
            )
        }
        2 => (
            "hashes",
            json!({"rows": 20_000 + (i % 3) * 15_000}),
            20_000 + (i % 3) as u64 * 15_000,
        ),
        _ => ("order_notes", json!({"last": 300}), 300),
    };
    let body = json!({"version": 1, "request_id": rid, "query": query, "params": params,
        "format": format, "layout": layout});
    (body, rows)
}

/// Emails in moto's SES outbox per request id among `rids`.
async fn ses_emails(rids: &[String]) -> HashMap<String, usize> {
    let (_, body) = testkit::http("GET", &var("DEVSTACK_SES_OUTBOX_URL"), "").await;
    let outbox: Value = serde_json::from_str(&body).unwrap();
    let mut counts = HashMap::new();
    for m in outbox["messages"].as_array().unwrap() {
        let raw = m["raw"].as_str().unwrap_or_default();
        // The Message-ID names the request exactly (`<request.attempt@domain>`); the subject
        // would also match requests whose id starts with this one.
        for rid in rids {
            if raw.contains(&format!("Message-ID: <{rid}.")) {
                *counts.entry(rid.clone()).or_default() += 1;
            }
        }
    }
    counts
}

/// Requests still open in `table`: the entries of its sparse open-requests index, which a
/// request leaves only on its terminal transition.
async fn open_requests(table: &str) -> usize {
    let mut open = 0;
    for shard in 0..8 {
        let mut pages = dynamodb()
            .query()
            .table_name(table)
            .index_name("open-requests")
            .key_condition_expression("open_shard = :s")
            .expression_attribute_values(
                ":s",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("open-{shard}")),
            )
            .into_paginator()
            .items()
            .send();
        while let Some(item) = pages.next().await {
            item.unwrap();
            open += 1;
        }
    }
    open
}

/// Whether every request is recorded and terminal.
async fn all_terminal(table: &str, expected: &[(String, u64)]) -> bool {
    for (rid, _) in expected {
        let done = state_in(table, rid)
            .await
            .is_some_and(|s| matches!(s["status"].as_str(), "COMPLETED" | "FAILED" | "CANCELLED"));
        if !done {
            return false;
        }
    }
    true
}

/// Messages in a queue, visible or in flight.
async fn queue_depth(url: &str) -> u64 {
    use aws_sdk_sqs::types::QueueAttributeName::{
        ApproximateNumberOfMessages, ApproximateNumberOfMessagesNotVisible,
    };
    let out = sqs()
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(ApproximateNumberOfMessages)
        .attribute_names(ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    out.attributes
        .unwrap_or_default()
        .values()
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn every_request_ends_completed_once_whatever_fails() {
    let requests = env_num("CHAOS_REQUESTS", 60) as usize;
    let workers = env_num("CHAOS_WORKERS", 3) as usize;
    let chaos_for = Duration::from_secs(env_num("CHAOS_SECS", 60));
    let (kill_min, kill_max) = std::env::var("CHAOS_KILL_MS")
        .ok()
        .and_then(|v| {
            let (a, b) = v.split_once('-')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or((3_000u64, 8_000u64));
    // Each lost SendEmail response is one duplicate email by nature; the small run keeps the
    // rate low enough that its 1 % budget (one email at 60 requests) is not spent by chance.
    let ses_lose = std::env::var("CHAOS_SES_LOSE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.001);
    let started = Instant::now();

    // The Data API throttles and fails now and then; moto's services fail requests, lose
    // responses after the write and cut connections. SendEmail gets a smaller loss rate of
    // its own: SES has no idempotency key, so every lost SendEmail response is a duplicate
    // email by nature, and the rate is the duplicate rate.
    let emulator = private_emulator(&[
        "--faults",
        r#"{"throttle_rate": 0.05, "error_rate": 0.03, "latency_ms": 5}"#,
    ])
    .await;
    let aws = FaultProxy::start_with(
        &var("AWS_ENDPOINT_URL"),
        Faults {
            fail: 0.05,
            lose: 0.02,
            drop: 0.01,
            ..Faults::default()
        },
    )
    .await;
    let ses = FaultProxy::start_with(
        &var("AWS_ENDPOINT_URL"),
        Faults {
            fail: 0.05,
            lose: ses_lose,
            drop: 0.0,
            ..Faults::default()
        },
    )
    .await;
    let table = new_state_table().await;
    let overrides = [
        redshift_at(&emulator),
        ("EXPORT_WORKER__AWS__ENDPOINTS__SQS", aws.url.as_str()),
        ("EXPORT_WORKER__AWS__ENDPOINTS__S3", aws.url.as_str()),
        ("EXPORT_WORKER__AWS__ENDPOINTS__DYNAMODB", aws.url.as_str()),
        ("EXPORT_WORKER__AWS__ENDPOINTS__SESV2", ses.url.as_str()),
        ("EXPORT_WORKER__EMAIL__TRANSPORT", "ses"),
        ("EXPORT_WORKER__STATE__TABLE", table.as_str()),
        ("EXPORT_WORKER__QUEUE__VISIBILITY_TIMEOUT_SECS", "30"),
        ("EXPORT_WORKER__WORKER__RETRY_DELAY_SECS", "1"),
        ("EXPORT_WORKER__WORKER__MAX_ATTEMPTS", "100"),
        ("EXPORT_WORKER__SWEEPER__ENABLED", "true"),
        ("EXPORT_WORKER__SWEEPER__INTERVAL_SECS", "5"),
        ("EXPORT_WORKER__SWEEPER__IDLE_SECS", "40"),
        ("EXPORT_WORKER__LOGGING__FILTER", "warn"),
        (
            "EXPORT_WORKER__REDSHIFT__MAX_CONCURRENT_STATEMENTS",
            STATEMENT_CAP,
        ),
    ];
    let mut daemons = vec![Daemon::start(&overrides).await];
    for _ in 1..workers {
        let next = daemons[0].another(&overrides);
        daemons.push(next);
    }
    let queue = daemons[0].queue_url.clone();
    let dlq = daemons[0].dlq_url.clone();

    let prefix = &testkit::unique("c")[..12];
    let mut expected = Vec::new();
    let mut duplicates_sent = 0;
    for i in 0..requests {
        let rid = format!("{prefix}-{i}");
        let (body, rows) = mix(i, &rid);
        daemons[0].send(&body.to_string()).await;
        if i % 10 == 3 {
            daemons[0].send(&body.to_string()).await;
            duplicates_sent += 1;
        }
        expected.push((rid, rows));
    }

    // Kill one worker at random every few seconds, and start a new one in its place, until
    // the chaos period is over; then wait for every request to end.
    let mut kills = 0;
    let deadline = chaos_for + Duration::from_secs(300 + requests as u64);
    loop {
        // The index is cheap to read; only when it is empty are all requests looked at (a
        // request not yet received has no state item and is in no index).
        let open = open_requests(&table).await;
        if open == 0 && all_terminal(&table, &expected).await {
            break;
        }
        assert!(
            started.elapsed() < deadline,
            "{open} requests still open after {:?}",
            started.elapsed()
        );
        if started.elapsed() < chaos_for {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(kill_min..=kill_max))).await;
            let victim = fastrand::usize(..daemons.len());
            daemons[victim].signal("KILL");
            daemons[victim].wait_exit(10).await;
            daemons[victim] = daemons[0].another(&overrides);
            kills += 1;
        } else {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let finished_after = started.elapsed();

    // Every request COMPLETED, by one UNLOAD, into one archive with the source's rows.
    let mut redriven = 0;
    for (rid, rows) in &expected {
        let s = state_in(&table, rid).await.unwrap();
        assert_eq!(s["status"], "COMPLETED", "{rid}: {s:?}");
        assert_eq!(s["rows"], rows.to_string(), "{rid}: recorded rows");
        redriven += s
            .get("redrives")
            .map_or(0, |n| n.parse::<u64>().unwrap_or(0));
        assert_eq!(
            unloads(&emulator.url, rid).await,
            1,
            "{rid}: exactly one UNLOAD"
        );
        let (path, _) = download_archive(&s["archive_key"]).await;
        let unzip = std::process::Command::new("unzip")
            .args(["-p"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(unzip.status.success(), "{rid}: unzip");
        let text = String::from_utf8_lossy(&unzip.stdout);
        let data_rows = if s["request"].contains("\"parquet\"") {
            read_parquet_zip(&path)
                .iter()
                .map(|e| e.rows.len() as u64)
                .sum()
        } else if s["request"].contains("\"json\"") {
            text.lines().filter(|l| !l.is_empty()).count() as u64
        } else {
            // One header line per entry.
            let entries = String::from_utf8_lossy(
                &std::process::Command::new("unzip")
                    .args(["-Z1"])
                    .arg(&path)
                    .output()
                    .unwrap()
                    .stdout,
            )
            .lines()
            .count() as u64;
            csv_records(&text).len() as u64 - entries
        };
        assert_eq!(data_rows, *rows, "{rid}: rows in the archive");
        let _ = std::fs::remove_file(&path);
    }
    // Nothing left behind in either queue.
    for _ in 0..60 {
        if queue_depth(&queue).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(queue_depth(&queue).await, 0, "request queue empty");
    assert_eq!(queue_depth(&dlq).await, 0, "dead-letter queue empty");
    // Duplicate emails are counted and rare.
    let rids: Vec<String> = expected.iter().map(|(r, _)| r.clone()).collect();
    let emails = ses_emails(&rids).await;
    let missing = rids.iter().filter(|r| !emails.contains_key(*r)).count();
    let duplicate_emails: usize = emails.values().map(|n| n.saturating_sub(1)).sum();
    // A lost SendEmail response always costs a duplicate (mail services have no idempotency
    // key); the 1 % on top bounds the others (a worker killed between the mail service
    // accepting the email and the record of it).
    let lost_sends = ses.lost().get("SendEmail").copied().unwrap_or(0);
    let allowed = requests.div_ceil(100) + usize::try_from(lost_sends).unwrap_or(usize::MAX);
    let lost = aws.lost();
    let report = json!({
        "requests": requests,
        "duplicate_messages_sent": duplicates_sent,
        "workers": workers,
        "kills": kills,
        "seconds_to_all_terminal": finished_after.as_secs_f64(),
        "completed": requests,
        "redriven_by_sweeper": redriven,
        "aws_failed_before": aws.injected(),
        "aws_forwarded": aws.forwarded(),
        "aws_lost_or_cut_by_operation": lost,
        "ses_failed_before": ses.injected(),
        "ses_lost": ses.lost(),
        "requests_without_email": missing,
        "duplicate_emails": duplicate_emails,
        "duplicate_email_rate": duplicate_emails as f64 / requests as f64,
    });
    // The cap held (statements here last a second or two, far less than the slot lease a
    // killed worker's slot needs to lapse), and every slot was given back or has lapsed.
    let (_, stats) = emulator.admin("GET", "stats", "").await;
    let stats: Value = serde_json::from_str(&stats).unwrap();
    let most = stats["max_running"].as_u64().unwrap();
    let slots_left = statement_slots_held(&table).await;
    let mut report = report;
    report["max_statements_running"] = json!(most);
    report["statement_slots_held_at_end"] = json!(slots_left);
    eprintln!("chaos figures: {report}");
    if let Ok(path) = std::env::var("CHAOS_REPORT") {
        std::fs::write(path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    }
    assert_eq!(missing, 0, "every request's email was sent: {report}");
    assert!(
        duplicate_emails <= allowed,
        "{duplicate_emails} duplicate emails for {requests} requests: {report}"
    );
    assert!(
        aws.injected() > 0 && kills > 0,
        "the chaos happened: {report}"
    );
    assert!(
        most <= STATEMENT_CAP.parse().unwrap(),
        "more statements at once than the cap: {report}"
    );
    assert_eq!(slots_left, 0, "no statement slot left held: {report}");
}

/// Statement slots still held by a live lease (a lapsed one is free to take).
async fn statement_slots_held(table: &str) -> usize {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    let item = dynamodb()
        .get_item()
        .table_name(table)
        .key("request_id", A::S("#fleet".into()))
        .key("sk", A::S("semaphore#statements".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    item.and_then(|i| i.get("holders").and_then(|h| h.as_m().ok()).cloned())
        .unwrap_or_default()
        .values()
        .filter(|until| {
            until
                .as_n()
                .ok()
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|until| until >= now)
        })
        .count()
}
