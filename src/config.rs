//! Typed settings: a TOML file plus `EXPORT_WORKER__SECTION__KEY` environment overrides, read
//! with the `config` crate, strict (unknown keys are errors) and validated once, with every
//! problem reported together. `config/default.toml` documents every key and its default.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::template::TemplateSpec;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub aws: AwsSettings,
    pub queue: QueueSettings,
    pub state: StateSettings,
    pub redshift: RedshiftSettings,
    pub upload: UploadSettings,
    pub archive: ArchiveSettings,
    #[serde(default)]
    pub presign: PresignSettings,
    pub email: EmailSettings,
    #[serde(default)]
    pub worker: WorkerSettings,
    #[serde(default)]
    pub logging: LoggingSettings,
    #[serde(default)]
    pub admin: AdminSettings,
    #[serde(default)]
    pub sql: SqlSettings,
    /// Named query templates, by name.
    #[serde(default)]
    pub templates: BTreeMap<String, TemplateSpec>,
    /// Accepting the AWS sample's message shape.
    #[serde(default)]
    pub compat: CompatSettings,
}

/// Region and endpoint overrides; credentials always come from the standard AWS chain.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSettings {
    /// Overrides the region of the AWS chain (AWS_REGION, profile, instance metadata).
    pub region: Option<String>,
    /// Per-service endpoint overrides (local stacks). They take precedence over
    /// AWS_ENDPOINT_URL_<SERVICE>.
    pub endpoints: Endpoints,
    /// Path-style S3 addressing (`host/bucket/key`), needed by moto and MinIO.
    pub s3_force_path_style: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Endpoints {
    pub sqs: Option<String>,
    pub s3: Option<String>,
    pub dynamodb: Option<String>,
    pub sesv2: Option<String>,
    pub redshift_data: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// The export request queue.
    pub url: String,
    /// Where messages that yield no request id go at once, with the reason attached.
    pub dead_letter_url: Option<String>,
    /// Long-poll wait, 1–20 s.
    #[serde(default = "default_wait_secs")]
    pub wait_secs: u32,
    /// Visibility timeout requested on receive.
    #[serde(default = "default_visibility_secs")]
    pub visibility_timeout_secs: u32,
    /// Largest accepted message body.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSettings {
    /// DynamoDB table (partition key `request_id`, sort key `sk`).
    pub table: String,
    /// Days until items expire (TTL attribute `expires_at`).
    #[serde(default = "default_ttl_days")]
    pub ttl_days: u32,
}

/// How the worker reaches Redshift and shapes the UNLOAD.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedshiftSettings {
    /// Provisioned cluster; exactly one of this and `workgroup_name`.
    pub cluster_identifier: Option<String>,
    /// Serverless workgroup.
    pub workgroup_name: Option<String>,
    pub database: String,
    /// Secrets Manager ARN with the database credentials (cluster or serverless).
    pub secret_arn: Option<String>,
    /// Database user for temporary credentials (cluster only).
    pub db_user: Option<String>,
    /// Role Redshift assumes to write to S3: `default` or role ARNs.
    #[serde(default = "default_iam_role")]
    pub iam_role: String,
    /// Largest UNLOAD part file, in MB (5–6200).
    #[serde(default = "default_max_file_size_mb")]
    pub max_file_size_mb: u32,
    /// KMS key for the unloaded files (ENCRYPTED KMS_KEY_ID); none means SSE-S3 defaults.
    pub kms_key_id: Option<String>,
    /// REGION of the upload bucket when it differs from the cluster's.
    pub region: Option<String>,
    /// First DescribeStatement poll delay.
    #[serde(default = "default_poll_initial_ms")]
    pub poll_initial_ms: u64,
    /// Longest delay between polls.
    #[serde(default = "default_poll_max_ms")]
    pub poll_max_ms: u64,
    /// A statement still running after this long is cancelled.
    #[serde(default = "default_query_timeout_secs")]
    pub query_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadSettings {
    /// Bucket Redshift unloads into.
    pub bucket: String,
    /// Key prefix; each attempt unloads under `<prefix>/<request_id>/<attempt>/`.
    #[serde(default = "default_upload_prefix")]
    pub prefix: String,
    /// Delete the unloaded files once the archive is written.
    #[serde(default = "default_true")]
    pub delete_after_archive: bool,
}

/// Layout of the zip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// One CSV (or JSON lines) file, header once.
    Single,
    /// One entry per UNLOAD part, each as produced.
    Parts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ServerSideEncryption {
    #[serde(rename = "none")]
    None,
    #[serde(rename = "AES256")]
    Aes256,
    #[serde(rename = "aws:kms")]
    Kms,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSettings {
    pub bucket: String,
    /// Key prefix; the archive is `<prefix>/<request_id>.zip`.
    #[serde(default = "default_archive_prefix")]
    pub prefix: String,
    /// Default layout when the request names none.
    #[serde(default = "default_layout")]
    pub layout: Layout,
    /// Multipart part size in MiB (5–512); with two parts in flight this bounds memory.
    #[serde(default = "default_part_size_mib")]
    pub part_size_mib: u32,
    /// DEFLATE level (1–9) when data must be recompressed.
    #[serde(default = "default_compression_level")]
    pub compression_level: u32,
    #[serde(default = "default_sse")]
    pub server_side_encryption: ServerSideEncryption,
    pub kms_key_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresignSettings {
    /// Requested link lifetime (at most 7 days); the credentials may cap it.
    pub expiry_secs: u64,
}

impl Default for PresignSettings {
    fn default() -> Self {
        PresignSettings {
            expiry_secs: 86_400,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailTransport {
    Ses,
    Smtp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    pub transport: EmailTransport,
    /// Sender address (a verified SES identity for `ses`).
    pub from: String,
    /// Recipients when a request names none.
    #[serde(default)]
    pub default_recipients: Vec<String>,
    /// Recipient domains allowed; empty allows any domain.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// Also email the recipients when an export fails.
    #[serde(default)]
    pub notify_on_failure: bool,
    /// Optional template files (minijinja); built-in templates otherwise.
    #[serde(default)]
    pub templates: EmailTemplateFiles,
    #[serde(default)]
    pub ses: SesSettings,
    #[serde(default)]
    pub smtp: SmtpSettings,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailTemplateFiles {
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub failure_subject: Option<String>,
    pub failure_text: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SesSettings {
    pub configuration_set: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// TLS from the first byte (port 465).
    Implicit,
    /// STARTTLS required (port 587).
    Starttls,
    /// No TLS: local relays and test sinks only.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    /// Better set through EXPORT_WORKER__EMAIL__SMTP__PASSWORD than in a file.
    pub password: Option<String>,
    pub timeout_secs: u64,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        SmtpSettings {
            host: String::new(),
            port: 587,
            tls: SmtpTls::Starttls,
            username: None,
            password: None,
            timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Name recorded as lease owner and in history events; the host name when empty.
    pub id: String,
    /// Jobs in flight at most; the worker receives only as many messages as it has free slots.
    pub max_concurrent_jobs: usize,
    /// Archive stages (CPU-bound) running at once, at most.
    pub max_concurrent_archives: usize,
    /// Deliveries after which a request fails with `attempts_exhausted`.
    pub max_attempts: u32,
    /// Retries of one AWS call inside a stage before the message is released.
    pub stage_retries: u32,
    /// How long a released message stays invisible before it is retried.
    pub retry_delay_secs: u32,
    /// After SIGTERM, how long the job in hand may run before its message is released.
    pub shutdown_grace_secs: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            id: String::new(),
            max_concurrent_jobs: 4,
            max_concurrent_archives: 2,
            max_attempts: 5,
            stage_retries: 3,
            retry_delay_secs: 30,
            shutdown_grace_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON otherwise.
    Auto,
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSettings {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `redshift_export_worker=debug,info`.
    pub filter: String,
}

impl Default for LoggingSettings {
    fn default() -> Self {
        LoggingSettings {
            format: LogFormat::Auto,
            filter: "info".into(),
        }
    }
}

/// The HTTP admin listener (/metrics, /healthz, /readyz, /jobs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Address to listen on; empty disables the listener.
    pub listen: String,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

impl AdminSettings {
    /// The address to listen on, if the listener is enabled.
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        self.listen.parse().ok()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqlSettings {
    /// Accept `sql` in messages (one read-only SELECT). Off by default.
    pub allow_raw: bool,
}

/// Maps the AWS sample's `{"requestid", "sku", …}` messages onto a template.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompatSettings {
    /// Template that sample-shaped messages run; empty disables the compatibility.
    pub sample_template: Option<String>,
    /// Message field → template parameter.
    pub sample_params: BTreeMap<String, String>,
}

fn default_wait_secs() -> u32 {
    20
}
fn default_visibility_secs() -> u32 {
    300
}
fn default_max_message_bytes() -> usize {
    256 * 1024
}
fn default_ttl_days() -> u32 {
    30
}
fn default_iam_role() -> String {
    "default".into()
}
fn default_max_file_size_mb() -> u32 {
    256
}
fn default_poll_initial_ms() -> u64 {
    250
}
fn default_poll_max_ms() -> u64 {
    5_000
}
fn default_query_timeout_secs() -> u64 {
    3_600
}
fn default_upload_prefix() -> String {
    "unload".into()
}
fn default_true() -> bool {
    true
}
fn default_archive_prefix() -> String {
    "exports".into()
}
fn default_layout() -> Layout {
    Layout::Single
}
fn default_part_size_mib() -> u32 {
    8
}
fn default_compression_level() -> u32 {
    6
}
fn default_sse() -> ServerSideEncryption {
    ServerSideEncryption::None
}

/// Every problem found in a configuration, reported together.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

impl Settings {
    /// Reads `path` plus environment overrides and validates the result.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let raw = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("EXPORT_WORKER")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("email.default_recipients")
                    .with_list_parse_key("email.allowed_domains"),
            )
            .build()
            .map_err(|e| ConfigError(vec![format!("{}: {e}", path.display())]))?;
        let settings: Settings = raw
            .try_deserialize()
            .map_err(|e| ConfigError(vec![format!("{}: {e}", path.display())]))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks everything that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, problem: String| {
            if !ok {
                problems.push(problem);
            }
        };
        check(!self.queue.url.is_empty(), "queue.url is empty".into());
        check(
            (1..=20).contains(&self.queue.wait_secs),
            "queue.wait_secs must be 1–20".into(),
        );
        check(
            (30..=43_200).contains(&self.queue.visibility_timeout_secs),
            "queue.visibility_timeout_secs must be 30–43200".into(),
        );
        check(!self.state.table.is_empty(), "state.table is empty".into());
        let r = &self.redshift;
        check(
            r.cluster_identifier.is_some() != r.workgroup_name.is_some(),
            "set exactly one of redshift.cluster_identifier and redshift.workgroup_name".into(),
        );
        check(
            !(r.secret_arn.is_some() && r.db_user.is_some()),
            "set at most one of redshift.secret_arn and redshift.db_user".into(),
        );
        check(
            !(r.workgroup_name.is_some() && r.db_user.is_some()),
            "redshift.db_user works only with a cluster; use secret_arn for a workgroup".into(),
        );
        check(!r.database.is_empty(), "redshift.database is empty".into());
        check(
            r.iam_role == "default"
                || r.iam_role
                    .split(',')
                    .all(|a| a.trim().starts_with("arn:aws") && !a.contains('\'')),
            format!(
                "redshift.iam_role must be \"default\" or role ARNs, got {:?}",
                r.iam_role
            ),
        );
        check(
            (5..=6200).contains(&r.max_file_size_mb),
            "redshift.max_file_size_mb must be 5–6200".into(),
        );
        check(
            r.poll_initial_ms > 0 && r.poll_max_ms >= r.poll_initial_ms,
            "redshift.poll_* delays are inconsistent".into(),
        );
        check(
            r.query_timeout_secs > 0,
            "redshift.query_timeout_secs must be positive".into(),
        );
        for (key, value) in [
            ("redshift.kms_key_id", &r.kms_key_id),
            ("redshift.region", &r.region),
        ] {
            check(
                value
                    .as_ref()
                    .is_none_or(|v| !v.is_empty() && !v.contains('\'') && !v.contains('\\')),
                format!("{key} must not be empty or contain quotes"),
            );
        }
        check(
            is_bucket(&self.upload.bucket),
            format!(
                "upload.bucket {:?} is not a bucket name",
                self.upload.bucket
            ),
        );
        check(
            is_bucket(&self.archive.bucket),
            format!(
                "archive.bucket {:?} is not a bucket name",
                self.archive.bucket
            ),
        );
        for (key, prefix) in [
            ("upload.prefix", &self.upload.prefix),
            ("archive.prefix", &self.archive.prefix),
        ] {
            check(
                !prefix.starts_with('/') && !prefix.contains('\'') && !prefix.contains('\\'),
                format!("{key} must not start with / or contain quotes"),
            );
        }
        check(
            (5..=512).contains(&self.archive.part_size_mib),
            "archive.part_size_mib must be 5–512".into(),
        );
        check(
            (1..=9).contains(&self.archive.compression_level),
            "archive.compression_level must be 1–9".into(),
        );
        check(
            self.archive.server_side_encryption == ServerSideEncryption::Kms
                || self.archive.kms_key_id.is_none(),
            "archive.kms_key_id needs archive.server_side_encryption = \"aws:kms\"".into(),
        );
        check(
            (60..=604_800).contains(&self.presign.expiry_secs),
            "presign.expiry_secs must be 60–604800 (7 days)".into(),
        );
        check(
            crate::message::EmailAddress::parse(&self.email.from).is_ok(),
            format!("email.from {:?} is not an email address", self.email.from),
        );
        for r in &self.email.default_recipients {
            check(
                crate::message::EmailAddress::parse(r).is_ok(),
                format!("email.default_recipients: {r:?} is not an email address"),
            );
        }
        if self.email.transport == EmailTransport::Smtp {
            check(
                !self.email.smtp.host.is_empty(),
                "email.smtp.host is empty".into(),
            );
            check(
                self.email.smtp.username.is_some() == self.email.smtp.password.is_some(),
                "set both email.smtp.username and email.smtp.password, or neither".into(),
            );
        }
        check(
            self.worker.max_attempts >= 1,
            "worker.max_attempts must be at least 1".into(),
        );
        for (name, spec) in &self.templates {
            if let Err(e) = spec.check(name) {
                problems.push(e);
            }
        }
        if let Some(t) = &self.compat.sample_template {
            match self.templates.get(t) {
                None => problems.push(format!("compat.sample_template {t:?} is not a template")),
                Some(spec) => {
                    for param in self.compat.sample_params.values() {
                        if !spec.params.contains_key(param) {
                            problems.push(format!("compat.sample_params maps to {param:?}, which template {t:?} does not declare"));
                        }
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(problems))
        }
    }
}

fn is_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
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
}
