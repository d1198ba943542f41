//! End-to-end harness: the real `redshift-export-worker` binary against the devstack, each
//! test with its own queue (so parallel tests never take each other's messages), and
//! independent readers for what comes out (Python's zipfile and email packages, `unzip -t`,
//! PostgreSQL's own COPY).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;
use testkit::{sdk_config, var};
use tokio::process::{Child, Command};

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
        let log = std::env::temp_dir().join(format!("{name}.log"));
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

/// The state item's attributes as strings.
pub async fn state(rid: &str) -> Option<HashMap<String, String>> {
    state_in(&var("DEVSTACK_TABLE"), rid).await
}

/// The state item's attributes as strings, from `table`.
pub async fn state_in(table: &str, rid: &str) -> Option<HashMap<String, String>> {
    let out = dynamodb()
        .get_item()
        .table_name(table)
        .key("request_id", AttributeValue::S(rid.into()))
        .key("sk", AttributeValue::S("state".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    out.item.map(|item| {
        item.into_iter()
            .map(|(k, v)| {
                let s = match v {
                    AttributeValue::S(s) | AttributeValue::N(s) => s,
                    other => format!("{other:?}"),
                };
                (k, s)
            })
            .collect()
    })
}

/// Waits (at most `secs`) for the request to be COMPLETED, FAILED or CANCELLED.
pub async fn wait_terminal(rid: &str, secs: u64) -> HashMap<String, String> {
    wait_terminal_in(&var("DEVSTACK_TABLE"), rid, secs).await
}

/// [`wait_terminal`] in `table`.
pub async fn wait_terminal_in(table: &str, rid: &str, secs: u64) -> HashMap<String, String> {
    for _ in 0..secs * 10 {
        if let Some(s) = state_in(table, rid).await
            && matches!(
                s.get("status").map(String::as_str),
                Some("COMPLETED" | "FAILED" | "CANCELLED")
            )
        {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "request {rid} did not finish within {secs} s; state: {:?}",
        state_in(table, rid).await
    );
}

/// Creates a state table of its own (with the open-requests index), as devstack/up creates
/// the shared one: for tests whose sweepers must see only their own requests.
pub async fn new_state_table() -> String {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
        Projection, ProjectionType, ScalarAttributeType,
    };
    let name = testkit::unique("state");
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let key = |n: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .unwrap()
    };
    dynamodb()
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(
            ["request_id", "sk", "open_shard", "updated_at"]
                .map(attr)
                .to_vec(),
        ))
        .key_schema(key("request_id", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("open-requests")
                .key_schema(key("open_shard", KeyType::Hash))
                .key_schema(key("updated_at", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::KeysOnly)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    name
}

/// The `to` of every history event, oldest first.
pub async fn history(rid: &str) -> Vec<String> {
    history_in(&var("DEVSTACK_TABLE"), rid).await
}

/// The `to` of every history event in `table`, oldest first.
pub async fn history_in(table: &str, rid: &str) -> Vec<String> {
    history_details_in(table, rid)
        .await
        .into_iter()
        .map(|(to, _)| to)
        .collect()
}

/// Downloads the archive with the SDK into a temporary file.
pub async fn download_archive(key: &str) -> (PathBuf, Vec<u8>) {
    let body = testkit::s3()
        .get_object()
        .bucket(var("DEVSTACK_ARCHIVE_BUCKET"))
        .key(key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes()
        .to_vec();
    let path = std::env::temp_dir().join(format!("{}.zip", testkit::unique("archive")));
    std::fs::write(&path, &body).unwrap();
    (path, body)
}

/// `tests/support/inspect.py KIND PATH`, run by the devstack's Python (which has jsonschema
/// and pyarrow).
fn inspect(kind: &str, path: &Path) -> Value {
    let out = std::process::Command::new(root().join("target/devstack/venv/bin/python"))
        .arg(root().join("tests/support/inspect.py"))
        .arg(kind)
        .arg(path)
        .output()
        .expect("the devstack's python");
    assert!(
        out.status.success(),
        "inspect.py {kind} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Checks the zip with `unzip -t`, Python's zipfile and the `zip` crate (which must read the
/// same names and bytes as Python); returns (name, text) of every entry.
pub fn read_zip(path: &Path) -> Vec<(String, String)> {
    let unzip = std::process::Command::new("unzip")
        .arg("-tq")
        .arg(path)
        .output()
        .expect("unzip");
    assert!(
        unzip.status.success(),
        "unzip -t failed: {}",
        String::from_utf8_lossy(&unzip.stdout)
    );
    let v = inspect("zip", path);
    assert!(
        v["testzip"].is_null(),
        "zipfile.testzip found a bad entry: {}",
        v["testzip"]
    );
    let entries: Vec<(String, String)> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["compress_type"], 8, "entries are deflated");
            (
                e["name"].as_str().unwrap().to_string(),
                e["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut archive = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let read: Vec<(String, String)> = (0..archive.len())
        .map(|i| {
            let mut entry = archive.by_index(i).unwrap();
            let mut text = String::new();
            // The zip crate checks each entry's CRC-32 and size as it reaches the end.
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            (entry.name().to_string(), text)
        })
        .collect();
    assert!(
        read == entries,
        "the zip crate reads another archive than Python"
    );
    entries
}

/// The email in the SMTP sink that mentions `rid`, decoded.
pub async fn smtp_mail(rid: &str) -> Value {
    let dir = PathBuf::from(var("DEVSTACK_MAIL_DIR"));
    for _ in 0..100 {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            // The request id is in the subject, which is never split inside a word; decode
            // only the file that has it.
            let hit = path.extension().is_some_and(|e| e == "eml")
                && std::fs::read_to_string(&path).is_ok_and(|raw| raw.contains(rid));
            if hit {
                let decoded = inspect("mime", &path);
                assert!(
                    decoded["subject"]
                        .as_str()
                        .unwrap_or_default()
                        .contains(rid)
                );
                return decoded;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no email for {rid} in {}", dir.display());
}

/// (to, detail) of every history event, oldest first.
pub async fn history_details(rid: &str) -> Vec<(String, String)> {
    history_details_in(&var("DEVSTACK_TABLE"), rid).await
}

/// [`history_details`] in `table`.
pub async fn history_details_in(table: &str, rid: &str) -> Vec<(String, String)> {
    let out = dynamodb()
        .query()
        .table_name(table)
        .key_condition_expression("request_id = :id AND begins_with(sk, :p)")
        .expression_attribute_values(":id", AttributeValue::S(rid.into()))
        .expression_attribute_values(":p", AttributeValue::S("event#".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    out.items()
        .iter()
        .map(|i| {
            let get = |k: &str| {
                i.get(k)
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default()
            };
            (get("to"), get("detail"))
        })
        .collect()
}

/// The overrides that add the devstack's webhook sink as destination `name`, at `path` of it
/// (`/hooks/partner-a`, or `/hooks/fail`, `/hooks/flaky`, `/hooks/redirect`: see
/// devstack/lib/webhook_sink.py), signed with the secret in DEVSTACK_WEBHOOK_SECRET.
pub fn webhook(name: &str, path: &str) -> Vec<(String, String)> {
    let name = name.to_ascii_uppercase();
    let key = |k: &str| format!("EXPORT_WORKER__EVENTS__DESTINATIONS__{name}__{k}");
    vec![
        (key("TYPE"), "webhook".into()),
        (key("URL"), format!("{}{path}", var("DEVSTACK_WEBHOOK_URL"))),
        (key("SECRET_ENV"), "DEVSTACK_WEBHOOK_SECRET".into()),
        (key("CA_FILE"), var("DEVSTACK_WEBHOOK_CA")),
        (
            "DEVSTACK_WEBHOOK_SECRET".into(),
            var("DEVSTACK_WEBHOOK_SECRET"),
        ),
    ]
}

/// Deliveries the webhook sink stored for `rid` (by the event's request id), oldest first.
pub fn webhook_deliveries(rid: &str) -> Vec<Value> {
    let dir = PathBuf::from(var("DEVSTACK_WEBHOOK_DIR"));
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    names.sort();
    names
        .iter()
        .filter_map(|p| serde_json::from_slice::<Value>(&std::fs::read(p).ok()?).ok())
        .filter(|d| d["body"]["request_id"] == rid)
        .collect()
}

/// One entry of an archive of Parquet files, as pyarrow reads it.
#[derive(Debug)]
pub struct ParquetEntry {
    pub name: String,
    /// ZIP compression method.
    pub method: u64,
    /// (column, Arrow type).
    pub schema: Vec<(String, String)>,
    /// Every value in PostgreSQL's text form; None for NULL.
    pub rows: Vec<Vec<Option<String>>>,
}

/// Checks an archive of Parquet files with `unzip -t` and the `zip` crate (each entry's
/// CRC-32 and size), then reads every entry with pyarrow.
pub fn read_parquet_zip(path: &Path) -> Vec<ParquetEntry> {
    let unzip = std::process::Command::new("unzip")
        .arg("-tq")
        .arg(path)
        .output()
        .expect("unzip");
    assert!(
        // An archive without entries is valid; unzip only warns about it.
        unzip.status.success()
            || String::from_utf8_lossy(&unzip.stdout).contains("zipfile is empty"),
        "unzip -t failed: {}",
        String::from_utf8_lossy(&unzip.stdout)
    );
    let mut archive = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        std::io::copy(&mut entry, &mut std::io::sink()).unwrap();
    }
    let v = inspect("parquet", path);
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| ParquetEntry {
            name: e["name"].as_str().unwrap().to_string(),
            method: e["compress_type"].as_u64().unwrap(),
            schema: serde_json::from_value(e["schema"].clone()).unwrap(),
            rows: serde_json::from_value(e["rows"].clone()).unwrap(),
        })
        .collect()
}

/// The rows of `query` from PostgreSQL itself, every value in its text form.
pub async fn pg_rows(query: &str) -> Vec<Vec<Option<String>>> {
    let pg = testkit::pg().await;
    pg.simple_query(query)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// Checks an event against schema/event.json with Python's jsonschema; returns the problems.
pub fn event_schema_errors(event: &Value) -> Vec<String> {
    let path = std::env::temp_dir().join(format!("{}.json", testkit::unique("event")));
    std::fs::write(&path, event.to_string()).unwrap();
    let result = inspect("event", &path);
    result["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap_or_default().to_string())
        .collect()
}

/// Every email in the SMTP sink that mentions `rid`: (envelope recipients, raw message).
pub fn smtp_mails(rid: &str) -> Vec<(String, String)> {
    let dir = PathBuf::from(var("DEVSTACK_MAIL_DIR"));
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "eml") {
            continue;
        }
        let Ok(raw) = std::fs::read_to_string(&path) else {
            continue;
        };
        if raw.contains(rid) {
            let to = raw
                .lines()
                .find_map(|l| l.strip_prefix("X-Envelope-To: "))
                .unwrap_or_default()
                .to_string();
            out.push((to, raw));
        }
    }
    out
}

/// Waits (at most `secs`) for an email about `rid` to `address` in the SMTP sink.
pub async fn wait_smtp_to(rid: &str, address: &str, secs: u64) {
    for _ in 0..secs * 10 {
        if smtp_mails(rid).iter().any(|(to, _)| to.contains(address)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no email about {rid} to {address}; got {:?}",
        smtp_mails(rid).iter().map(|m| &m.0).collect::<Vec<_>>()
    );
}

/// Takes (receives and deletes) the messages waiting in a queue, waiting at most a second:
/// (body, error_code attribute) of each.
pub async fn take_messages(url: &str) -> Vec<(String, String)> {
    let sqs = sqs();
    let out = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap();
    for m in out.messages() {
        sqs.delete_message()
            .queue_url(url)
            .receipt_handle(m.receipt_handle().unwrap())
            .send()
            .await
            .unwrap();
    }
    out.messages()
        .iter()
        .map(|m| {
            let code = m
                .message_attributes()
                .and_then(|a| a.get("error_code"))
                .and_then(|v| v.string_value())
                .unwrap_or_default()
                .to_string();
            (m.body().unwrap_or_default().to_string(), code)
        })
        .collect()
}

/// The message sent through SES (moto's outbox) that mentions `rid`: (destinations, decoded).
pub async fn ses_mail(rid: &str) -> (Value, Value) {
    let (_, body) = testkit::http("GET", &var("DEVSTACK_SES_OUTBOX_URL"), "").await;
    let outbox: Value = serde_json::from_str(&body).unwrap();
    for m in outbox["messages"].as_array().unwrap() {
        if let Some(raw) = m["raw"].as_str()
            && raw.contains(rid)
        {
            let path = std::env::temp_dir().join(format!("{}.eml", testkit::unique("ses")));
            std::fs::write(&path, raw).unwrap();
            return (m["destinations"].clone(), inspect("mime", &path));
        }
    }
    panic!("no SES message for {rid}");
}

/// `COPY (query) TO STDOUT WITH (FORMAT csv, HEADER)` from PostgreSQL itself.
pub async fn pg_csv(query: &str) -> String {
    let pg = testkit::pg().await;
    let copy = pg
        .copy_out(&format!(
            "COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER)"
        ))
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = futures_util::TryStreamExt::try_collect(copy).await.unwrap();
    String::from_utf8(chunks.concat()).unwrap()
}

/// Splits CSV text into records (newlines inside quotes stay in their record).
pub fn csv_records(text: &str) -> Vec<String> {
    let mut records = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for ch in text.chars() {
        if ch == '"' {
            quoted = !quoted;
        }
        if ch == '\n' && !quoted {
            records.push(std::mem::take(&mut current));
        } else {
            current.push(ch);
        }
    }
    if !current.is_empty() {
        records.push(current);
    }
    records
}

/// Header, then the data records sorted: PARALLEL ON spreads rows over slices, so only the
/// multiset of rows is defined, as on Redshift.
pub fn header_and_sorted_rows(text: &str) -> (String, Vec<String>) {
    let mut records = csv_records(text);
    assert!(!records.is_empty(), "no header");
    let header = records.remove(0);
    records.sort();
    (header, records)
}

/// The UNLOAD the emulator received for `rid` (its TO path contains the request id).
pub async fn unload_sql(rid: &str) -> Vec<String> {
    let (_, body) = testkit::http(
        "GET",
        &format!("{}/sql-log", var("DEVSTACK_EMULATOR_ADMIN_URL")),
        "",
    )
    .await;
    let log: Value = serde_json::from_str(&body).unwrap();
    log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sql"].as_str().unwrap().to_string())
        .filter(|sql| sql.contains(&format!("/{rid}/")))
        .collect()
}

/// How many UNLOADs the emulator at `emulator_url` received for `rid`.
pub async fn unloads(emulator_url: &str, rid: &str) -> usize {
    let (_, log) = testkit::http("GET", &format!("{emulator_url}/__admin/sql-log"), "").await;
    let log: Value = serde_json::from_str(&log).unwrap();
    log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["sql"].as_str().unwrap().contains(&format!("/{rid}/")))
        .count()
}

/// The string literals of the SELECT inside an UNLOAD, decoded by the emulator's independent
/// implementation of Redshift's lexer.
pub fn select_literals(unload: &str) -> Vec<String> {
    let spec = redshift_data_local::unload::parse::parse_unload(unload).unwrap();
    redshift_data_local::sqltext::tokenize(&spec.select)
        .unwrap()
        .into_iter()
        .filter_map(|t| match t.token {
            redshift_data_local::sqltext::Token::Literal(v) => Some(v),
            _ => None,
        })
        .collect()
}

/// Decodes the presigned link out of an email body.
pub fn link_in(text: &str) -> String {
    text.lines()
        .find(|l| l.starts_with("http"))
        .expect("no link in the email")
        .trim()
        .to_string()
}
