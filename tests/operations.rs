//! Operating the daemon: the admin endpoints, metrics that pass promtool, and a graceful
//! shutdown that loses nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

#[tokio::test]
async fn metrics_pass_promtool_and_count_the_work() {
    // Port 0: the daemon binds a free port and logs the address (no race for a port).
    let (daemon, log) =
        Daemon::start_logged(&[("EXPORT_WORKER__ADMIN__LISTEN", "127.0.0.1:0")]).await;
    let listen = admin_address(&log).await;
    let ok = daemon.request_sku("FLOWER12").await;
    let bad = daemon
        .request("no_such_template", json!({}), json!({}))
        .await;
    wait_terminal(&ok, 60).await;
    wait_terminal(&bad, 60).await;
    let base = format!("http://{listen}");
    let (status, text) = testkit::http("GET", &format!("{base}/metrics"), "").await;
    assert_eq!(status, 200);
    for expected in [
        "redshift_export_jobs_total{error_code=\"\",outcome=\"completed\"} 1",
        "redshift_export_jobs_total{error_code=\"unknown_template\",outcome=\"failed\"} 1",
        "redshift_export_messages_received_total 2",
        "redshift_export_rows_exported_total 1",
        // One part of one row: kept in memory between its two reads.
        "redshift_export_archive_part_rereads_total{from=\"memory\"} 1",
        "redshift_export_archive_part_rereads_total{from=\"s3\"} 0",
        "redshift_export_stage_duration_seconds_count{stage=\"archive\"} 1",
        "redshift_export_build_info{revision=",
        "process_resident_memory_bytes ",
        "redshift_export_queue_messages{queue=\"dead_letter\",state=\"visible\"} 0",
        "redshift_export_failures_total 1",
        "redshift_export_aws_requests_total{operation=\"ExecuteStatement\",outcome=\"ok\"",
        "redshift_export_aws_requests_total{operation=\"TransactWriteItems\",outcome=\"ok\"",
    ] {
        assert!(text.contains(expected), "{expected} missing from\n{text}");
    }
    assert!(!text.contains(&ok), "no request id in any label");
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool on PATH (Debian package prometheus; scripts/test installs it)");
    use std::io::Write;
    promtool
        .stdin
        .as_ref()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        testkit::http("GET", &format!("{base}/healthz"), "").await.0,
        200
    );
    assert_eq!(
        testkit::http("GET", &format!("{base}/readyz"), "").await.0,
        200
    );
}

#[tokio::test]
async fn sigterm_releases_every_message_and_another_worker_finishes_them_without_a_second_unload() {
    let emulator = private_emulator(&["--faults", r#"{"hold_statements": true}"#]).await;
    let overrides = [
        redshift_at(&emulator),
        ("EXPORT_WORKER__WORKER__SHUTDOWN_GRACE_SECS", "2"),
        ("EXPORT_WORKER__WORKER__MAX_CONCURRENT_JOBS", "3"),
        ("EXPORT_WORKER__QUEUE__VISIBILITY_TIMEOUT_SECS", "600"),
        ("EXPORT_WORKER__ADMIN__LISTEN", "127.0.0.1:0"),
    ];
    let (mut first, first_log) = Daemon::start_logged(&overrides).await;
    let listen = admin_address(&first_log).await;
    let mut rids = Vec::new();
    for sku in ["FLOWER12", "FLOWER13", "FLOWER14"] {
        rids.push(first.request_sku(sku).await);
    }
    let mut statements = Vec::new();
    for rid in &rids {
        statements.push(wait_status(rid, "QUERYING", 60).await["statement_id"].clone());
    }
    let base = format!("http://{listen}");
    assert_eq!(
        testkit::http("GET", &format!("{base}/readyz"), "").await.0,
        200
    );
    let (_, jobs) = testkit::http("GET", &format!("{base}/jobs"), "").await;
    for rid in &rids {
        assert!(jobs.contains(rid.as_str()), "{jobs}");
    }
    assert!(jobs.contains("querying"), "{jobs}");

    let signalled = Instant::now();
    first.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        testkit::http("GET", &format!("{base}/readyz"), "").await.0,
        503,
        "not ready once stopping"
    );
    let status = first.wait_exit(2 + 5).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(7));
    for rid in &rids {
        assert_eq!(
            state(rid).await.unwrap()["status"],
            "QUERYING",
            "the statement was left running"
        );
    }

    // The messages are visible again at once (not after the 600 s visibility timeout), and the
    // next worker re-attaches to the same statements.
    emulator.set_faults("{}").await;
    let _second = first.another(&[
        redshift_at(&emulator),
        ("EXPORT_WORKER__ADMIN__LISTEN", "127.0.0.1:0"),
    ]);
    let (_, log) = {
        for (rid, statement) in rids.iter().zip(&statements) {
            let done = wait_terminal(rid, 30).await;
            assert_eq!(done["status"], "COMPLETED", "{done:?}");
            assert_eq!(&done["statement_id"], statement, "re-attached, not re-run");
        }
        testkit::http("GET", &format!("{}/__admin/sql-log", emulator.url), "").await
    };
    for rid in &rids {
        assert_eq!(
            log.matches(&format!("/{rid}/")).count(),
            1,
            "exactly one UNLOAD for {rid}"
        );
    }
}

#[tokio::test]
async fn cancel_during_querying_aborts_the_statement_and_ends_cancelled() {
    let emulator = private_emulator(&["--faults", r#"{"hold_statements": true}"#]).await;
    let daemon = Daemon::start(&[redshift_at(&emulator)]).await;
    let rid = daemon.request_sku("FLOWER12").await;
    let querying = wait_status(&rid, "QUERYING", 60).await;
    let out = cli(&["cancel", &rid], &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = wait_terminal(&rid, 60).await;
    assert_eq!(done["status"], "CANCELLED", "{done:?}");
    assert_eq!(done["error_code"], "cancelled");
    assert_eq!(
        emulator.statement_status(&querying["statement_id"]).await,
        Some(aws_sdk_redshiftdata::types::StatusString::Aborted),
    );
    assert_eq!(history(&rid).await, ["QUEUED", "QUERYING", "CANCELLED"]);
    let again = cli(&["cancel", &rid], &[]).await;
    assert_eq!(
        again.status.code(),
        Some(1),
        "a finished request cannot be cancelled"
    );
    assert_eq!(
        cli(&["cancel", "no-such-request"], &[]).await.status.code(),
        Some(1)
    );
}

#[tokio::test]
async fn check_passes_against_the_stack_and_names_what_is_missing() {
    let ok = cli(&["check"], &[]).await;
    let text = String::from_utf8_lossy(&ok.stdout).to_string();
    assert!(
        ok.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for probe in [
        "configuration",
        "queue",
        "dead-letter queue",
        "attempts and the queue's redrive",
        "table",
        "upload bucket",
        "archive bucket",
        "email (smtp)",
        "redshift",
        "presigned links",
    ] {
        assert!(
            text.contains(&format!("ok    {probe}")),
            "{probe} missing in\n{text}"
        );
    }

    let missing = format!("missing-{}", &testkit::unique("b")[..20]);
    let bad = cli(
        &["check"],
        &[("EXPORT_WORKER__ARCHIVE__BUCKET", missing.as_str())],
    )
    .await;
    let text = String::from_utf8_lossy(&bad.stdout).to_string();
    assert_eq!(bad.status.code(), Some(69), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("FAIL"))
        .unwrap_or_else(|| panic!("no failure in\n{text}"));
    assert!(
        line.contains(&format!("archive bucket {missing}")) && line.contains("archive.bucket"),
        "{line}"
    );
    assert!(text.contains("1 of 10 checks failed"), "{text}");
    assert!(!line.contains("headers"), "concise: {line}");

    let ses = cli(&["check"], &[("EXPORT_WORKER__EMAIL__TRANSPORT", "ses")]).await;
    let text = String::from_utf8_lossy(&ses.stdout).to_string();
    assert!(ses.status.success(), "{text}");
    assert!(
        text.contains("ok    email (ses): identity exports@example.com is verified"),
        "{text}"
    );
}

#[tokio::test]
async fn json_logs_carry_the_request_and_statement_and_no_links_or_addresses() {
    let (daemon, log) = Daemon::start_logged(&[("EXPORT_WORKER__LOGGING__FORMAT", "json")]).await;
    let recipient = "logs-check@example.org";
    let rid = daemon
        .request(
            "product_detail_by_sku",
            json!({"sku": "FLOWER12"}),
            json!({"notify": {"email": [recipient]}}),
        )
        .await;
    let state = wait_terminal(&rid, 60).await;
    assert_eq!(state["status"], "COMPLETED");
    let link = link_in(smtp_mail(&rid).await["text"].as_str().unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let job_lines: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["span"]["name"] == "job")
        .collect();
    assert!(job_lines.len() >= 4, "{text}");
    for line in &job_lines {
        assert_eq!(line["span"]["request_id"], rid.as_str(), "{line}");
    }
    let after_submit = job_lines
        .iter()
        .skip_while(|l| l["message"] != "statement submitted");
    for line in after_submit {
        assert_eq!(
            line["span"]["statement_id"],
            state["statement_id"].as_str(),
            "{line}"
        );
    }
    assert!(!text.contains(recipient), "no email address in the log");
    assert!(
        !text.contains("X-Amz-Signature") && !text.contains(&link),
        "no presigned link in the log"
    );
}

#[tokio::test]
async fn max_attempts_must_be_below_the_queues_max_receive_count() {
    // A queue whose redrive would dead-letter a message on its 3rd receive: with
    // max_attempts 5 the worker would never see the delivery on which it ends the request.
    let sqs = support::sqs();
    let name = testkit::unique("redrive");
    let dlq = sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let dlq_arn = queue_arn(&dlq).await;
    let queue = sqs
        .create_queue()
        .queue_name(&name)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"}).to_string(),
        )
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let on_queue = [("EXPORT_WORKER__QUEUE__URL", queue.as_str())];

    let check = cli(&["check"], &on_queue).await;
    let text = String::from_utf8_lossy(&check.stdout).to_string();
    assert_eq!(check.status.code(), Some(69), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("FAIL"))
        .unwrap_or_else(|| panic!("no failure in\n{text}"));
    assert!(
        line.contains("max_attempts is 5") && line.contains("maxReceiveCount is 3"),
        "{line}"
    );
    let run = tokio::time::timeout(Duration::from_secs(60), cli(&["run"], &on_queue))
        .await
        .expect("run must refuse to start, not run");
    assert_eq!(
        run.status.code(),
        Some(64),
        "run refuses to start: {}",
        String::from_utf8_lossy(&run.stderr)
    );

    let fits = [
        ("EXPORT_WORKER__QUEUE__URL", queue.as_str()),
        ("EXPORT_WORKER__WORKER__MAX_ATTEMPTS", "2"),
    ];
    let check = cli(&["check"], &fits).await;
    let text = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(
        text.contains("ok    attempts and the queue's redrive: worker.max_attempts 2 is below the queue's maxReceiveCount 3"),
        "{text}"
    );
}

#[tokio::test]
async fn dlq_lists_redrives_fails_and_deletes() {
    let emulator = private_emulator(&["--faults", r#"{"hold_statements": true}"#]).await;
    let mut daemon = Daemon::start(&[redshift_at(&emulator)]).await;
    // A message the worker dead-letters itself (no request id)…
    daemon.send("not json at all").await;
    // …and a request whose message SQS moved after too many receives while it was running.
    let rid = daemon.request_sku("FLOWER12").await;
    wait_status(&rid, "QUERYING", 60).await;
    daemon.signal("KILL");
    daemon.wait_exit(10).await;
    let body = json!({"version": 1, "request_id": rid, "query": "product_detail_by_sku",
        "params": {"sku": "FLOWER12"}});
    sqs()
        .send_message()
        .queue_url(&daemon.dlq_url)
        .message_body(body.to_string())
        .send()
        .await
        .unwrap();
    let on = [
        ("EXPORT_WORKER__QUEUE__URL", daemon.queue_url.as_str()),
        (
            "EXPORT_WORKER__QUEUE__DEAD_LETTER_URL",
            daemon.dlq_url.as_str(),
        ),
    ];
    let mut entries = Vec::new();
    for _ in 0..50 {
        let listed = cli(&["dlq", "list", "--json"], &on).await;
        assert!(listed.status.success(), "{listed:?}");
        entries = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect();
        if entries.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(entries.len(), 2, "{entries:?}");
    let find = |code: &str| {
        entries
            .iter()
            .find(|e| e["error_code"] == code)
            .unwrap_or_else(|| panic!("no {code} in {entries:?}"))
            .clone()
    };
    let unusable = find("invalid_json");
    let redriven = find("redrive_policy");
    assert_eq!(redriven["request_id"], rid.as_str());
    assert_eq!(redriven["status"], "QUERYING");

    let failed = cli(
        &["dlq", "fail", redriven["message_id"].as_str().unwrap()],
        &on,
    )
    .await;
    let text = String::from_utf8_lossy(&failed.stdout).to_string();
    assert!(failed.status.success(), "{text}");
    assert!(text.contains("is FAILED"), "{text}");
    let state = wait_terminal(&rid, 10).await;
    assert_eq!(state["error_code"], "dead_lettered", "{state:?}");

    // The unusable message goes back to the request queue (and nobody listens there now).
    let back = cli(
        &["dlq", "redrive", unusable["message_id"].as_str().unwrap()],
        &on,
    )
    .await;
    assert!(back.status.success(), "{back:?}");
    let requeued = take_messages(&daemon.queue_url).await;
    assert!(
        requeued.iter().any(|(b, _)| b == "not json at all"),
        "{requeued:?}"
    );
    let listed = cli(&["dlq", "list"], &on).await;
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("0 message(s)"),
        "{listed:?}"
    );
    let missing = cli(&["dlq", "delete", "no-such-message"], &on).await;
    assert_eq!(missing.status.code(), Some(1));
}

#[tokio::test]
async fn check_offline_touches_nothing_and_a_bad_listen_address_is_a_configuration_error() {
    let nowhere = "http://127.0.0.1:9";
    let offline = [
        ("EXPORT_WORKER__AWS__ENDPOINTS__SQS", nowhere),
        ("EXPORT_WORKER__AWS__ENDPOINTS__S3", nowhere),
        ("EXPORT_WORKER__AWS__ENDPOINTS__DYNAMODB", nowhere),
        ("EXPORT_WORKER__AWS__ENDPOINTS__SESV2", nowhere),
        ("EXPORT_WORKER__AWS__ENDPOINTS__REDSHIFT_DATA", nowhere),
        ("EXPORT_WORKER__EMAIL__SMTP__HOST", "mail.invalid"),
    ];
    let out = cli(&["check", "--offline"], &offline).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("ok    configuration:") && text.contains("all 1 checks passed"),
        "{text}"
    );

    let bad = [("EXPORT_WORKER__ADMIN__LISTEN", "localhost:9464")];
    for args in [&["check", "--offline"][..], &["run"][..]] {
        let out = cli(args, &bad).await;
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("admin.listen \"localhost:9464\""),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
