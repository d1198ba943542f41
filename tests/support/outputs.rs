//! What an export leaves for its readers, read independently: the archive (`unzip -t`, Python's
//! zipfile, the `zip` crate, pyarrow), the emails in the SMTP sink and moto's SES outbox, the
//! webhook sink's deliveries, the messages of a queue, events against their schema.

use super::*;

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
    let path = scratch(&format!("{}.zip", testkit::unique("archive")));
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

/// Checks an event against schema/event.json with Python's jsonschema; returns the problems.
pub fn event_schema_errors(event: &Value) -> Vec<String> {
    let path = scratch(&format!("{}.json", testkit::unique("event")));
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
            let path = scratch(&format!("{}.eml", testkit::unique("ses")));
            std::fs::write(&path, raw).unwrap();
            return (m["destinations"].clone(), inspect("mime", &path));
        }
    }
    panic!("no SES message for {rid}");
}

/// Decodes the presigned link out of an email body.
pub fn link_in(text: &str) -> String {
    text.lines()
        .find(|l| l.starts_with("http"))
        .expect("no link in the email")
        .trim()
        .to_string()
}
