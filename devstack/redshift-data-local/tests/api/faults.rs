//! Fault injection and statistics through the admin endpoints.

use std::time::Duration;

use aws_sdk_redshiftdata::error::ProvideErrorMetadata;
use aws_sdk_redshiftdata::types::StatusString;
use testkit::wait_terminal;

use super::{emulator, submit};

#[tokio::test]
async fn injected_throttling_and_server_errors_reach_the_client() {
    let emu = emulator(&[]).await;
    let bare = emu.client_without_retries();
    emu.set_faults(r#"{"throttle_next": 1, "error_next": 1, "operations": ["DescribeStatement"]}"#)
        .await;
    let id = submit(&bare, "select 1").await;
    let err = bare.describe_statement().id(&id).send().await.unwrap_err();
    assert_eq!(err.code(), Some("ThrottlingException"));
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    let err = bare.describe_statement().id(&id).send().await.unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_internal_server_exception()),
        "{err:?}"
    );
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(500));
    assert!(
        bare.describe_statement().id(&id).send().await.is_ok(),
        "faults are used up"
    );

    // The SDK's standard retry policy rides over two throttles.
    emu.set_faults(r#"{"throttle_next": 2}"#).await;
    let retried = emu.client().describe_statement().id(&id).send().await;
    assert!(retried.is_ok(), "{retried:?}");
}

#[tokio::test]
async fn injected_statement_failures_and_holds() {
    let emu = emulator(&[]).await;
    let client = emu.client();
    emu.set_faults(r#"{"fail_statements": 1, "fail_message": "ERROR: disk full (injected)"}"#)
        .await;
    let failed = emu.run("select 1").await;
    assert_eq!(failed.status(), Some(&StatusString::Failed));
    assert_eq!(failed.error(), Some("ERROR: disk full (injected)"));
    assert_eq!(
        emu.run("select 1").await.status(),
        Some(&StatusString::Finished)
    );

    emu.set_faults(r#"{"hold_statements": true}"#).await;
    let held = submit(&client, "select 1").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = client.describe_statement().id(&held).send().await.unwrap();
    assert_eq!(d.status(), Some(&StatusString::Started), "held in STARTED");
    let (status, _) = emu.admin("POST", "release", "").await;
    assert_eq!(status, 204);
    assert_eq!(
        wait_terminal(&client, &held).await.status(),
        Some(&StatusString::Finished)
    );

    // A held statement can be cancelled.
    let held = submit(&client, "select 1").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.cancel_statement().id(&held).send().await.unwrap();
    assert_eq!(
        wait_terminal(&client, &held).await.status(),
        Some(&StatusString::Aborted)
    );
}

#[tokio::test]
async fn stats_report_the_most_statements_in_flight() {
    let emu = emulator(&[]).await;
    let client = emu.client();
    emu.set_faults(r#"{"hold_statements": true}"#).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(submit(&client, "select 1").await);
    }
    emu.set_faults("{}").await;
    for id in &ids {
        wait_terminal(&client, id).await;
    }
    let (_, body) = emu.admin("GET", "stats", "").await;
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["max_running"], 3);
    assert_eq!(stats["running"], 0);
}
