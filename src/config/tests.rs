//! Tests of loading and validating configurations, including the shipped files.

use std::path::Path;

use super::*;

fn path(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name)
}

fn from_toml(text: &str) -> Settings {
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap()
}

/// The required keys, with the example values default.toml shows.
const REQUIRED: &str = r#"
    [queue]
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/exports"
    [state]
    table = "export-requests"
    [redshift]
    cluster_identifier = "analytics"
    database = "dev"
    [upload]
    bucket = "exports-upload"
    [archive]
    bucket = "exports-archive"
    [email]
    transport = "ses"
    from = "exports@example.com"
"#;

#[test]
fn shipped_configurations_load_and_validate() {
    for name in ["default.toml", "local.toml", "example.toml"] {
        if let Err(e) = Settings::load(&path(name)) {
            panic!("{name}: {e}");
        }
    }
}

#[test]
fn default_toml_documents_the_real_defaults() {
    let documented = Settings::load(&path("default.toml")).unwrap();
    let minimal = from_toml(REQUIRED);
    assert_eq!(format!("{documented:?}"), format!("{minimal:?}"));
}

#[test]
fn unknown_keys_are_errors() {
    let text = format!("{REQUIRED}\n[worker]\nmax_attempt = 3\n");
    let result = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .build()
        .unwrap()
        .try_deserialize::<Settings>();
    assert!(result.unwrap_err().to_string().contains("max_attempt"));
}

#[test]
fn every_problem_is_reported_together() {
    let mut s = from_toml(REQUIRED);
    s.queue.wait_secs = 0;
    s.redshift.workgroup_name = Some("wg".into());
    s.archive.bucket = "Bad_Bucket".into();
    s.presign.expiry_secs = 700_000;
    let e = s.validate().unwrap_err();
    assert_eq!(e.0.len(), 4, "{e}");
}

impl Settings {
    /// The required keys only (every other key at its default), for other modules' tests.
    pub(crate) fn for_tests() -> Settings {
        from_toml(REQUIRED)
    }
}

#[test]
fn smtp_credentials_need_tls_and_slots_cannot_be_zero() {
    let mut s = Settings::for_tests();
    s.email.transport = EmailTransport::Smtp;
    s.email.smtp.host = "mail.example.com".into();
    s.email.smtp.username = Some("u".into());
    s.email.smtp.password = Some("p".into());
    s.email.smtp.tls = SmtpTls::None;
    s.worker.max_concurrent_jobs = 0;
    s.admin.listen = "localhost:9464".into();
    s.worker.max_concurrent_archives = 0;
    s.templates.insert(
        "bad name!".into(),
        TemplateSpec {
            sql: "select 1".into(),
            description: None,
            params: BTreeMap::new(),
        },
    );
    let problems = s.validate().unwrap_err().0;
    for expected in [
        "email.smtp.username needs TLS",
        "worker.max_concurrent_jobs must be at least 1",
        "worker.max_concurrent_archives must be at least 1",
        "template name \"bad name!\"",
        "admin.listen \"localhost:9464\" is not an IP address and port",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{expected}: {problems:?}"
        );
    }
}

#[test]
fn environment_overrides_stay_text_until_their_key_reads_them() {
    let env = [
        ("EXPORT_WORKER__EMAIL__SMTP__PASSWORD", "007"),
        ("EXPORT_WORKER__EMAIL__SMTP__USERNAME", "true"),
        ("EXPORT_WORKER__EMAIL__SMTP__PORT", "2525"),
        ("EXPORT_WORKER__EMAIL__SMTP__TLS", "starttls"),
        ("EXPORT_WORKER__EMAIL__NOTIFY_ON_FAILURE", "false"),
        (
            "EXPORT_WORKER__EMAIL__ALLOWED_DOMAINS",
            "example.com, example.org",
        ),
        (
            "EXPORT_WORKER__EMAIL__OPERATOR_RECIPIENTS",
            "ops@example.com",
        ),
        ("EXPORT_WORKER__WORKER__MAX_ATTEMPTS", "3"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .into();
    let s = Settings::load_with_env(&path("local.toml"), env).unwrap();
    assert_eq!(s.email.smtp.password.as_deref(), Some("007"));
    assert_eq!(s.email.smtp.username.as_deref(), Some("true"));
    assert_eq!(s.email.smtp.port, 2525);
    assert!(!s.email.notify_on_failure);
    assert_eq!(s.email.allowed_domains, ["example.com", "example.org"]);
    assert_eq!(s.email.operator_recipients, ["ops@example.com"]);
    assert_eq!(s.worker.max_attempts, 3);
}

#[test]
fn event_destinations_are_checked_and_webhooks_must_be_https() {
    let mut s = Settings::for_tests();
    s.events.default = vec!["nowhere".into()];
    s.events.destinations.insert(
        "bad name".into(),
        super::Destination::Sqs {
            queue_url: "http://127.0.0.1/q".into(),
        },
    );
    s.events.destinations.insert(
        "plain".into(),
        super::Destination::Webhook {
            url: "http://hooks.example/x".into(),
            secret_env: "HOOK_SECRET".into(),
            ca_file: None,
        },
    );
    s.events.max_attempts = 0;
    let problems = s.validate().unwrap_err().0;
    for expected in [
        "events.default names \"nowhere\"",
        "events.destinations.bad name: names are",
        "events.destinations.plain.url must be an https:// URL",
        "events.max_attempts must be 1–10",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{expected}: {problems:?}"
        );
    }
}
