//! Fleet-wide limits with real daemons on a table of their own: the Redshift statement cap
//! (`redshift.max_concurrent_statements`), checked against the emulator's own count of
//! statements running at once, fair shares per requester
//! (`worker.max_in_flight_per_requester`), and polling that rides out DescribeStatement
//! throttling.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

#[tokio::test]
async fn three_workers_of_four_slots_never_run_more_statements_than_the_fleet_cap() {
    // An emulator and a table of this test's own: its statistics and its semaphore see only
    // these daemons.
    let emulator = private_emulator(&[]).await;
    let table = new_state_table().await;
    let overrides = [
        redshift_at(&emulator),
        ("EXPORT_WORKER__STATE__TABLE", table.as_str()),
        ("EXPORT_WORKER__WORKER__MAX_CONCURRENT_JOBS", "4"),
        ("EXPORT_WORKER__REDSHIFT__MAX_CONCURRENT_STATEMENTS", "3"),
    ];
    let (first, log) = Daemon::start_logged(&overrides).await;
    let admin = admin_address(&log).await;
    let _second = first.another(&overrides);
    let _third = first.another(&overrides);
    emulator.admin("POST", "stats/reset", "").await;
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(first.request("slow", json!({"secs": 1}), json!({})).await);
    }
    let mut waited = 0;
    for rid in &ids {
        let done = wait_terminal_in(&table, rid, 120).await;
        assert_eq!(done["status"], "COMPLETED", "{done:?}");
        let history = history_details_in(&table, rid).await;
        if history
            .iter()
            .any(|(_, d)| d.starts_with("waiting for a Redshift statement slot"))
        {
            waited += 1;
        }
    }
    let (_, stats) = emulator.admin("GET", "stats", "").await;
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["total"], 12, "{stats}");
    assert!(
        stats["max_running"].as_u64().unwrap() <= 3,
        "the emulator saw more than 3 statements at once: {stats}"
    );
    assert_eq!(
        stats["max_running"], 3,
        "the cap is used, not just respected: {stats}"
    );
    assert!(
        waited > 0,
        "with 12 slots for 3 statements, some jobs waited"
    );
    // Every slot was given back.
    assert_eq!(
        metric(&admin, "redshift_export_statement_slot_waiting").await,
        0.0
    );
    let holders = dynamodb()
        .get_item()
        .table_name(&table)
        .key(
            "request_id",
            aws_sdk_dynamodb::types::AttributeValue::S("#fleet".into()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("semaphore#statements".into()),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(holders["holders"].as_m().unwrap().len(), 0, "{holders:?}");
}

#[tokio::test]
async fn throttled_polling_slows_down_and_never_gives_up_a_running_statement() {
    // Six throttled DescribeStatement calls: two calls after the SDK's three attempts each.
    let emulator = private_emulator(&[]).await;
    let (daemon, log) = Daemon::start_logged(&[redshift_at(&emulator)]).await;
    let admin = admin_address(&log).await;
    emulator
        .set_faults(r#"{"throttle_next": 6, "operations": ["DescribeStatement"]}"#)
        .await;
    let rid = daemon.request("slow", json!({"secs": 1}), json!({})).await;
    let done = wait_terminal(&rid, 120).await;
    assert_eq!(done["status"], "COMPLETED", "{done:?}");
    assert_eq!(unloads(&emulator.url, &rid).await, 1, "one UNLOAD");
    // The job kept its message and polled on: nothing was released for a retry.
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("DescribeStatement failed; polling again later"),
        "the throttling was met"
    );
    let released = metric(
        &admin,
        "redshift_export_jobs_total{error_code=\"\",outcome=\"retried\"}",
    )
    .await;
    assert_eq!(released, 0.0);
}

#[tokio::test]
async fn one_requesters_flood_does_not_hold_up_another_requester() {
    let emulator = private_emulator(&[]).await;
    let table = new_state_table().await;
    let (daemon, log) = Daemon::start_logged(&[
        redshift_at(&emulator),
        ("EXPORT_WORKER__STATE__TABLE", table.as_str()),
        ("EXPORT_WORKER__WORKER__MAX_CONCURRENT_JOBS", "4"),
        ("EXPORT_WORKER__WORKER__MAX_IN_FLIGHT_PER_REQUESTER", "2"),
        ("EXPORT_WORKER__WORKER__RETRY_DELAY_SECS", "2"),
    ])
    .await;
    let admin = admin_address(&log).await;
    emulator.admin("POST", "stats/reset", "").await;
    let mut flood = Vec::new();
    for _ in 0..40 {
        flood.push(
            daemon
                .request(
                    "slow",
                    json!({"secs": 1}),
                    json!({"requested_by": "requester-a"}),
                )
                .await,
        );
    }
    let other = daemon
        .request(
            "slow",
            json!({"secs": 1}),
            json!({"requested_by": "requester-b"}),
        )
        .await;
    let done = wait_terminal_in(&table, &other, 120).await;
    assert_eq!(done["status"], "COMPLETED", "{done:?}");
    // When B's export is done, most of A's are still waiting their turn.
    let mut finished = 0;
    for rid in &flood {
        if state_in(&table, rid)
            .await
            .is_some_and(|s| s["status"] == "COMPLETED")
        {
            finished += 1;
        }
    }
    assert!(
        finished <= 10,
        "{finished} of A's 40 exports finished before B's one"
    );
    // A's backlog completes, two at a time, without using up any request's attempts.
    let mut noted = 0;
    for rid in &flood {
        let s = wait_terminal_in(&table, rid, 240).await;
        assert_eq!(s["status"], "COMPLETED", "{s:?}");
        assert_eq!(s["attempt"], "1", "{s:?}");
        let waits = history_details_in(&table, rid)
            .await
            .iter()
            .filter(|(_, d)| d.starts_with("waiting: its requester has"))
            .count();
        assert!(
            waits <= 1,
            "the wait is noted once, not per deferral: {rid}"
        );
        noted += waits;
    }
    assert!(noted > 0, "some of A's requests waited");
    let (_, stats) = emulator.admin("GET", "stats", "").await;
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert!(
        stats["max_running"].as_u64().unwrap() <= 3,
        "A's two and B's one at most: {stats}"
    );
    assert!(metric(&admin, "redshift_export_requester_deferrals_total").await > 0.0);
    // Nothing left behind: every deferred copy was consumed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(take_messages(&daemon.queue_url).await.is_empty());
}
