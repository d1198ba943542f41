//! Typed settings: a TOML file plus `EXPORT_WORKER__SECTION__KEY` environment overrides, read
//! with the `config` crate, strict (unknown keys are errors) and validated once, with every
//! problem reported together. `config/default.toml` documents every key and its default.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::message::{CompatSettings, Layout};
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
    #[serde(default)]
    pub sweeper: SweeperSettings,
    /// Completion events and where they go.
    #[serde(default)]
    pub events: EventsSettings,
    /// Named query templates, by name.
    #[serde(default)]
    pub templates: BTreeMap<String, TemplateSpec>,
    /// Accepting the AWS sample's message shape.
    #[serde(default)]
    pub compat: CompatSettings,
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
    /// The shortest first DescribeStatement delay: the first delay is learned from the
    /// statements before, between this and `poll_max_ms` (`redshift::FirstPoll`).
    #[serde(default = "default_poll_initial_ms")]
    pub poll_initial_ms: u64,
    /// Longest delay between polls.
    #[serde(default = "default_poll_max_ms")]
    pub poll_max_ms: u64,
    /// A statement still running after this long is cancelled.
    #[serde(default = "default_query_timeout_secs")]
    pub query_timeout_secs: u64,
    /// Redshift statements running at once across every replica on the table; 0: no limit
    /// (each replica runs up to `worker.max_concurrent_jobs`).
    #[serde(default)]
    pub max_concurrent_statements: u32,
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
    /// Multipart part size in MiB (5–512); with the parts in flight this bounds memory.
    #[serde(default = "default_part_size_mib")]
    pub part_size_mib: u32,
    /// Multipart parts uploading at once while the next one fills (1–8).
    #[serde(default = "default_uploads_in_flight")]
    pub uploads_in_flight: u32,
    /// Parts decoded at once in the whole process (0: one per CPU).
    #[serde(default)]
    pub decode_threads: u32,
    /// A part longer than this many MiB is read with ranged GETs of this size in parallel
    /// (0, the default: one GET per part).
    #[serde(default = "default_range_size_mib")]
    pub range_size_mib: u32,
    /// Memory, in MiB, that all parts being read may hold in ranges fetched ahead.
    #[serde(default = "default_read_ahead_mib")]
    pub read_ahead_mib: u32,
    /// Directory where a part's gzip bytes are kept while it is decoded, so that it is read
    /// from S3 once (`archive/spill.rs`).
    #[serde(default = "default_spill_dir")]
    pub spill_dir: String,
    /// Disk, in MiB, that all parts being decoded may hold in `spill_dir` (0: nothing is
    /// spilled and every part is read from S3 twice).
    #[serde(default = "default_spill_mib")]
    pub spill_mib: u32,
    /// DEFLATE level (1–9) when data must be recompressed.
    #[serde(default = "default_compression_level")]
    pub compression_level: u32,
    #[serde(default = "default_sse")]
    pub server_side_encryption: ServerSideEncryption,
    pub kms_key_id: Option<String>,
    /// Most data rows one export may have (0: no cap); checked when the query finishes.
    #[serde(default)]
    pub max_rows: u64,
    /// Most bytes of data one export may unpack, all parts together.
    #[serde(default = "default_max_uncompressed_bytes")]
    pub max_uncompressed_bytes: u64,
    /// Most a part may inflate relative to its compressed size, against decompression bombs.
    #[serde(default = "default_max_inflate_ratio")]
    pub max_inflate_ratio: u64,
    /// Longest the archive stage may take, in seconds.
    #[serde(default = "default_max_archive_secs")]
    pub max_archive_secs: u64,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Name recorded as lease owner and in history events; the host name when empty.
    pub id: String,
    /// Jobs in flight at most; the worker receives only as many messages as it has free slots.
    pub max_concurrent_jobs: usize,
    /// Requests of one `requested_by` worked on at once across every replica on the table;
    /// 0: no limit. A request over it is put back on the queue with a delay.
    pub max_in_flight_per_requester: u32,
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
            max_in_flight_per_requester: 0,
            max_concurrent_archives: 2,
            max_attempts: 5,
            stage_retries: 3,
            retry_delay_secs: 30,
            shutdown_grace_secs: 60,
        }
    }
}

/// The sweeper: no request stays open for ever, whatever happened to its message.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SweeperSettings {
    /// Run the sweeper in this process (safe with any number of replicas).
    pub enabled: bool,
    /// Seconds between sweeps (each replica; a little jitter is added).
    pub interval_secs: u64,
    /// An open request that has not moved for this long and that no live job holds has lost
    /// its message. Must exceed the queue's visibility timeout plus the retry delay.
    pub idle_secs: u64,
    /// Times such a request is sent again from its recorded request before it fails with
    /// `orphaned`.
    pub max_redrives: u32,
}

impl Default for SweeperSettings {
    fn default() -> Self {
        SweeperSettings {
            enabled: true,
            interval_secs: 60,
            idle_secs: 900,
            max_redrives: 2,
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
    /// The address to listen on, None when the listener is disabled (`listen` empty). An
    /// address that does not parse is refused when the configuration is validated.
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        self.listen.parse().ok()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqlSettings {
    /// Accept `sql` in messages (one read-only SELECT). Off by default.
    pub allow_raw: bool,
    /// Schemas raw SQL may read; every table it names must be qualified with one of them
    /// (unqualified names would resolve through the search path, which starts at the system
    /// catalog). Required when `allow_raw` is on.
    pub allowed_schemas: Vec<String>,
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
    6
}
fn default_uploads_in_flight() -> u32 {
    2
}
fn default_range_size_mib() -> u32 {
    0
}
fn default_read_ahead_mib() -> u32 {
    16
}
fn default_spill_dir() -> String {
    "/var/tmp".into()
}
fn default_spill_mib() -> u32 {
    1024
}
fn default_compression_level() -> u32 {
    6
}
fn default_max_uncompressed_bytes() -> u64 {
    1 << 40
}
fn default_max_inflate_ratio() -> u64 {
    1_100
}
fn default_max_archive_secs() -> u64 {
    21_600
}
fn default_sse() -> ServerSideEncryption {
    ServerSideEncryption::None
}

mod aws;
mod email;
mod events;
mod load;
pub use aws::{AwsSettings, Endpoints};
pub use email::{
    EmailSettings, EmailTemplateFiles, EmailTransport, SesSettings, SmtpSettings, SmtpTls,
};
pub use events::{Destination, EventsSettings, is_destination_name};
pub use load::ConfigError;

#[cfg(test)]
mod tests;
