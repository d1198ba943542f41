//! Test harness for everything that runs against the devstack: its settings (from the
//! environment or `target/devstack/env`), real AWS SDK clients for it, private
//! `redshift-data-local` processes (so fault injection never leaks between parallel tests),
//! and a minimal HTTP client for admin endpoints and presigned links.
//!
//! Test-only code: it panics with a clear message instead of returning errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

mod fault_proxy;
pub use fault_proxy::{FaultProxy, Faults, operation};

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput;
use aws_sdk_redshiftdata::types::StatusString;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// The devstack's settings: from the environment when sourced, else from its env file.
pub fn devstack() -> &'static HashMap<String, String> {
    static VARS: OnceLock<HashMap<String, String>> = OnceLock::new();
    VARS.get_or_init(|| {
        let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/devstack/env");
        let mut vars = HashMap::new();
        if let Ok(text) = std::fs::read_to_string(&file) {
            for line in text.lines() {
                if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
                    vars.insert(k.to_string(), v.trim_matches('\'').to_string());
                }
            }
        }
        for (k, v) in std::env::vars() {
            if k.starts_with("DEVSTACK_") || k.starts_with("AWS_") {
                vars.insert(k, v);
            }
        }
        assert!(
            vars.contains_key("DEVSTACK_PG_CONN"),
            "the devstack is not up: run devstack/up first ({} not found)",
            file.display()
        );
        vars
    })
}

pub fn var(name: &str) -> String {
    devstack()
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} missing from the devstack env"))
}

/// SDK configuration for the devstack with `endpoint` as the endpoint.
pub fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    let creds = aws_sdk_s3::config::Credentials::new(
        var("AWS_ACCESS_KEY_ID"),
        var("AWS_SECRET_ACCESS_KEY"),
        None,
        None,
        "devstack",
    );
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(creds))
        .endpoint_url(endpoint)
        .build()
}

/// An S3 client for moto.
pub fn s3() -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(&sdk_config(&var("AWS_ENDPOINT_URL")))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A PostgreSQL connection to the devstack database.
pub async fn pg() -> tokio_postgres::Client {
    let conn = format!(
        "{} dbname={}",
        var("DEVSTACK_PG_CONN"),
        var("DEVSTACK_DATABASE")
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// A running emulator, killed when dropped.
pub struct Emulator {
    /// Held so that the process is killed when the emulator is dropped.
    _child: Child,
    pub url: String,
}

impl Emulator {
    /// Starts the emulator binary at `bin` with `extra` options.
    pub async fn start(bin: &str, extra: &[&str]) -> Self {
        let vars = devstack();
        let mut child = Command::new(bin)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--pg",
                &var("DEVSTACK_PG_CONN"),
                "--s3-endpoint",
                &var("AWS_ENDPOINT_URL"),
            ])
            .args(if extra.contains(&"--step-delay-ms") {
                &[][..]
            } else {
                &["--step-delay-ms", "5"][..]
            })
            .args(extra)
            .env_clear()
            .envs(vars.iter().filter(|(k, _)| k.starts_with("AWS_")))
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RDL_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn redshift-data-local");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("emulator did not start within 30 s")
            .unwrap()
            .expect("emulator exited before listening");
        let url = line.rsplit(' ').next().unwrap().to_string();
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "unexpected start line {line:?}"
        );
        Emulator { _child: child, url }
    }

    /// A Data API client with the SDK's standard retries.
    pub fn client(&self) -> aws_sdk_redshiftdata::Client {
        aws_sdk_redshiftdata::Client::new(&sdk_config(&self.url))
    }

    /// A Data API client that never retries, to see every injected fault.
    pub fn client_without_retries(&self) -> aws_sdk_redshiftdata::Client {
        let conf = aws_sdk_redshiftdata::config::Builder::from(&sdk_config(&self.url))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build();
        aws_sdk_redshiftdata::Client::from_conf(conf)
    }

    pub async fn admin(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http(method, &format!("{}/__admin/{path}", self.url), body).await
    }

    pub async fn set_faults(&self, json: &str) {
        let (status, body) = self.admin("PUT", "faults", json).await;
        assert_eq!(status, 200, "{body}");
    }

    /// The SQL texts the emulator logged for one statement.
    pub async fn sql_log(&self, statement_id: &str) -> Vec<String> {
        let (_, body) = self
            .admin("GET", &format!("sql-log?statement_id={statement_id}"), "")
            .await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["sql"].as_str().unwrap().to_string())
            .collect()
    }

    /// The status of statement `id` as this emulator reports it.
    pub async fn statement_status(&self, id: &str) -> Option<StatusString> {
        let out = self
            .client()
            .describe_statement()
            .id(id)
            .send()
            .await
            .unwrap();
        out.status().cloned()
    }

    /// Runs `sql` on the devstack cluster and waits for a terminal state.
    pub async fn run(&self, sql: &str) -> DescribeStatementOutput {
        let client = self.client();
        let out = client
            .execute_statement()
            .cluster_identifier(var("DEVSTACK_CLUSTER_ID"))
            .database(var("DEVSTACK_DATABASE"))
            .db_user(var("DEVSTACK_DB_USER"))
            .sql(sql)
            .send()
            .await
            .unwrap();
        wait_terminal(&client, out.id().unwrap()).await
    }
}

/// Polls DescribeStatement until FINISHED, FAILED or ABORTED (at most 120 s).
pub async fn wait_terminal(
    client: &aws_sdk_redshiftdata::Client,
    id: &str,
) -> DescribeStatementOutput {
    for _ in 0..2400 {
        let d = client.describe_statement().id(id).send().await.unwrap();
        if matches!(
            d.status(),
            Some(StatusString::Finished | StatusString::Failed | StatusString::Aborted)
        ) {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("statement {id} did not finish within 120 s");
}

/// A minimal HTTP/1.1 client (no dependency for a few calls); returns status and body.
pub async fn http(method: &str, url: &str, body: &str) -> (u16, String) {
    let (status, bytes) = http_bytes(method, url, body).await;
    (status, String::from_utf8_lossy(&bytes).to_string())
}

/// Like [`http`], with the body as bytes (no chunked encoding: Connection: close).
pub async fn http_bytes(method: &str, url: &str, body: &str) -> (u16, Vec<u8>) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response[split..].to_vec())
}

/// A prefix no other test uses.
pub fn unique(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4().simple())
}

/// Every object under `prefix` in `bucket`: key → bytes.
pub async fn objects(bucket: &str, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let s3 = s3();
    let list = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    let mut out = Vec::new();
    for o in list.contents() {
        let key = o.key().unwrap().to_string();
        let body = s3
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap();
        out.push((key, body.into_bytes().to_vec()));
    }
    out.sort();
    out
}

pub fn gunzip(data: &[u8]) -> String {
    use std::io::Read;
    let mut s = String::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_string(&mut s)
        .unwrap();
    s
}
