//! End-to-end harness: the real `redshift-export-worker` binary against the devstack, each
//! test with its own queue (so parallel tests never take each other's messages), and
//! independent readers for what comes out (Python's zipfile and email packages, `unzip -t`,
//! PostgreSQL's own COPY).

// Every test binary includes this harness and uses a different part of it.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;
use testkit::{sdk_config, var};
use tokio::process::{Child, Command};

mod outputs;
mod sql;
mod state;

pub use outputs::*;
pub use sql::*;
pub use state::*;

pub fn sqs() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&sdk_config(&var("AWS_ENDPOINT_URL")))
}

/// The ARN of the queue at `url`.
pub async fn queue_arn(url: &str) -> String {
    use aws_sdk_sqs::types::QueueAttributeName::QueueArn;
    sqs()
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueArn]
        .clone()
}

pub fn dynamodb() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&sdk_config(&var("AWS_ENDPOINT_URL")))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path for a file the harness writes (a downloaded archive, a daemon's log): in the directory
/// Cargo keeps for integration tests under the target directory rather than the system's
/// `/tmp`, where nothing removed them; it is there to read after a failed test until
/// `cargo clean`.
pub fn scratch(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// A queue and its dead-letter queue of their own: (name, queue URL, dead-letter URL).
async fn new_queues() -> (String, String, String) {
    let sqs = sqs();
    let name = testkit::unique("e2e");
    let mut urls = Vec::new();
    for queue in [name.clone(), format!("{name}-dlq")] {
        urls.push(
            sqs.create_queue()
                .queue_name(queue)
                .send()
                .await
                .unwrap()
                .queue_url
                .unwrap(),
        );
    }
    let dlq = urls.pop().unwrap();
    (name, urls.pop().unwrap(), dlq)
}

/// A daemon process with a queue of its own, killed when dropped.
pub struct Daemon {
    child: Child,
    pub queue_url: String,
    pub dlq_url: String,
}

impl Daemon {
    /// Starts `run --config config/local.toml` with extra `EXPORT_WORKER__…` overrides.
    pub async fn start(overrides: &[(&str, &str)]) -> Daemon {
        let (_, queue_url, dlq_url) = new_queues().await;
        Self::start_on(queue_url, dlq_url, overrides, None)
    }

    /// Like [`Daemon::start`], with the daemon's log (stderr) written to the returned file.
    pub async fn start_logged(overrides: &[(&str, &str)]) -> (Daemon, PathBuf) {
        let (name, queue_url, dlq_url) = new_queues().await;
        let log = scratch(&format!("{name}.log"));
        (
            Self::start_on(queue_url, dlq_url, overrides, Some(&log)),
            log,
        )
    }

    /// Asks for the sample template's export of one SKU; returns the request id.
    pub async fn request_sku(&self, sku: &str) -> String {
        self.request(
            "product_detail_by_sku",
            serde_json::json!({ "sku": sku }),
            serde_json::json!({}),
        )
        .await
    }

    /// Starts another daemon on the same queues as `self`.
    pub fn another(&self, overrides: &[(&str, &str)]) -> Daemon {
        Self::start_on(
            self.queue_url.clone(),
            self.dlq_url.clone(),
            overrides,
            None,
        )
    }

    fn start_on(
        queue_url: String,
        dlq_url: String,
        overrides: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_redshift-export-worker"));
        cmd.args(["run", "--config"])
            .arg(root().join("config/local.toml"))
            .env_clear()
            .envs(
                testkit::devstack()
                    .iter()
                    .filter(|(k, _)| k.starts_with("AWS_")),
            )
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("EXPORT_WORKER__QUEUE__URL", &queue_url)
            .env("EXPORT_WORKER__QUEUE__DEAD_LETTER_URL", &dlq_url)
            .env(
                "EXPORT_WORKER__EMAIL__SMTP__HOST",
                var("DEVSTACK_SMTP_HOST"),
            )
            .env(
                "EXPORT_WORKER__EMAIL__SMTP__PORT",
                var("DEVSTACK_SMTP_PORT"),
            )
            .env("EXPORT_WORKER__LOGGING__FORMAT", "human")
            .env("EXPORT_WORKER_LOG", "info")
            // Tests run side by side: each admin listener takes a free port.
            .env("EXPORT_WORKER__ADMIN__LISTEN", "127.0.0.1:0")
            // A sweeper acts on the whole (shared) table but sends to its own daemon's queue;
            // tests of the sweeper turn it on.
            .env("EXPORT_WORKER__SWEEPER__ENABLED", "false")
            .stdout(Stdio::null())
            .stderr(match log {
                Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
                None => Stdio::inherit(),
            })
            .kill_on_drop(true);
        for (k, v) in overrides {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn redshift-export-worker");
        Daemon {
            child,
            queue_url,
            dlq_url,
        }
    }

    /// Sends a raw message body to this daemon's queue.
    pub async fn send(&self, body: &str) {
        sqs()
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    /// Sends a v1 request for `query` with `params`; returns its request id.
    pub async fn request(&self, query: &str, params: Value, extra: Value) -> String {
        let rid = testkit::unique("req");
        let mut body = serde_json::json!({ "version": 1, "request_id": rid, "query": query, "params": params });
        if let Value::Object(more) = extra {
            for (k, v) in more {
                body[k] = v;
            }
        }
        self.send(&body.to_string()).await;
        rid
    }

    /// Sends a small export (demo.orders 1–10) with `notify`; returns its request id.
    pub async fn request_with(&self, notify: Value) -> String {
        self.request(
            "orders_between",
            serde_json::json!({"first": 1, "last": 10}),
            serde_json::json!({ "notify": notify }),
        )
        .await
    }

    /// Sends `signal` (e.g. "TERM", "KILL") to the daemon.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the daemon has exited");
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits at most `secs` for the daemon to exit.
    pub async fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(secs), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the daemon did not exit within {secs} s"))
            .unwrap()
    }
}

/// The admin listener's address, as the daemon logged it (the log of [`Daemon::start_logged`]).
pub async fn admin_address(log: &Path) -> String {
    for _ in 0..100 {
        let text = strip_ansi(&std::fs::read_to_string(log).unwrap_or_default());
        if let Some(addr) = text
            .lines()
            .find(|l| l.contains("admin listener started"))
            .and_then(|l| l.split("addr=").nth(1))
        {
            return addr
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the daemon did not log its admin address in {}",
        log.display()
    );
}

/// Text without the terminal colour sequences of the human log format.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The value of one sample line of the daemon's /metrics (0 when absent).
pub async fn metric(admin: &str, sample: &str) -> f64 {
    let (_, text) = testkit::http("GET", &format!("http://{admin}/metrics"), "").await;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Runs a CLI command (`status`, `cancel`, `check`, …) with config/local.toml and the devstack
/// environment plus `overrides`.
pub async fn cli(args: &[&str], overrides: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_redshift-export-worker"));
    cmd.arg(args[0])
        .arg("--config")
        .arg(root().join("config/local.toml"))
        .args(&args[1..])
        .env_clear()
        .envs(
            testkit::devstack()
                .iter()
                .filter(|(k, _)| k.starts_with("AWS_")),
        )
        .env(
            "EXPORT_WORKER__EMAIL__SMTP__HOST",
            var("DEVSTACK_SMTP_HOST"),
        )
        .env(
            "EXPORT_WORKER__EMAIL__SMTP__PORT",
            var("DEVSTACK_SMTP_PORT"),
        )
        .env("EXPORT_WORKER__QUEUE__URL", var("DEVSTACK_QUEUE_URL"))
        .env(
            "EXPORT_WORKER__QUEUE__DEAD_LETTER_URL",
            var("DEVSTACK_DLQ_URL"),
        );
    for (k, v) in overrides {
        cmd.env(k, v);
    }
    cmd.output().await.unwrap()
}

/// Waits (at most `secs`) for the request to reach `status`.
pub async fn wait_status(rid: &str, status: &str, secs: u64) -> HashMap<String, String> {
    for _ in 0..secs * 20 {
        if let Some(s) = state(rid).await
            && s.get("status").map(String::as_str) == Some(status)
        {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "request {rid} did not reach {status} within {secs} s; state: {:?}",
        state(rid).await
    );
}

/// The override that points a daemon at `emulator` for the Redshift Data API.
pub fn redshift_at(emulator: &testkit::Emulator) -> (&'static str, &str) {
    (
        "EXPORT_WORKER__AWS__ENDPOINTS__REDSHIFT_DATA",
        emulator.url.as_str(),
    )
}

/// A private emulator, for tests that inject faults or change its behaviour.
pub async fn private_emulator(extra: &[&str]) -> testkit::Emulator {
    testkit::Emulator::start(&var("DEVSTACK_EMULATOR_BIN"), extra).await
}
