//! Reading the file and the environment overrides, then every check that types alone cannot
//! make, with all problems reported together.

use std::path::Path;

use super::{EmailTransport, ServerSideEncryption, Settings, SmtpTls};

/// Every problem found in a configuration, reported together.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

/// Keys whose environment override is a comma-separated list.
const LIST_KEYS: &[&str] = &[
    "email.default_recipients",
    "email.allowed_domains",
    "email.operator_recipients",
    "sql.allowed_schemas",
    "events.default",
];

/// Prefix of the environment overrides: `EXPORT_WORKER__SECTION__KEY`.
const ENV_PREFIX: &str = "EXPORT_WORKER";

impl Settings {
    /// Reads `path` plus environment overrides and validates the result.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        // Variables that are not Unicode cannot be settings; they are skipped, not a panic.
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Self::load_with_env(path, env)
    }

    /// [`Settings::load`] with the environment given as a map. Every override stays text
    /// until the key's own type reads it, so a password `007` stays `007` (numbers and
    /// booleans are parsed by the typed field); list keys are split at commas.
    pub fn load_with_env(
        path: &Path,
        env: std::collections::HashMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        let fail = |e: config::ConfigError| ConfigError(vec![format!("{}: {e}", path.display())]);
        let mut builder = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(env.clone())),
            );
        for key in LIST_KEYS {
            let var = format!(
                "{ENV_PREFIX}__{}",
                key.to_ascii_uppercase().replace('.', "__")
            );
            if let Some(value) = env.get(&var) {
                let items: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                builder = builder.set_override(*key, items).map_err(fail)?;
            }
        }
        let raw = builder.build().map_err(fail)?;
        let settings: Settings = raw
            .try_deserialize()
            .map_err(|e| ConfigError(vec![format!("{}: {e}", path.display())]))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks everything that types alone cannot, section by section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        self.check_queue(&mut p);
        self.check_redshift(&mut p);
        self.check_storage(&mut p);
        self.check_email(&mut p);
        self.check_worker(&mut p);
        self.check_templates(&mut p);
        p.0.extend(self.events.problems());
        if p.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(p.0))
        }
    }

    /// The queue, the table and the AWS calls' timeout.
    fn check_queue(&self, p: &mut Problems) {
        p.check(!self.queue.url.is_empty(), "queue.url is empty".into());
        p.check(
            (1..=20).contains(&self.queue.wait_secs),
            "queue.wait_secs must be 1–20".into(),
        );
        p.check(
            (30..=43_200).contains(&self.queue.visibility_timeout_secs),
            "queue.visibility_timeout_secs must be 30–43200".into(),
        );
        p.check(
            (1..=262_144).contains(&self.queue.max_message_bytes),
            "queue.max_message_bytes must be 1–262144 (SQS's limit; the request is stored in DynamoDB's 400 KB item)".into(),
        );
        p.check(!self.state.table.is_empty(), "state.table is empty".into());
        p.check(
            (1..=3600).contains(&self.aws.attempt_timeout_secs),
            "aws.attempt_timeout_secs must be 1–3600".into(),
        );
    }

    /// How the worker reaches Redshift.
    fn check_redshift(&self, p: &mut Problems) {
        let r = &self.redshift;
        p.check(
            r.cluster_identifier.is_some() != r.workgroup_name.is_some(),
            "set exactly one of redshift.cluster_identifier and redshift.workgroup_name".into(),
        );
        p.check(
            !(r.secret_arn.is_some() && r.db_user.is_some()),
            "set at most one of redshift.secret_arn and redshift.db_user".into(),
        );
        p.check(
            !(r.workgroup_name.is_some() && r.db_user.is_some()),
            "redshift.db_user works only with a cluster; use secret_arn for a workgroup".into(),
        );
        p.check(!r.database.is_empty(), "redshift.database is empty".into());
        p.check(
            r.iam_role == "default"
                || r.iam_role
                    .split(',')
                    .all(|a| a.trim().starts_with("arn:aws") && !a.contains('\'')),
            format!(
                "redshift.iam_role must be \"default\" or role ARNs, got {:?}",
                r.iam_role
            ),
        );
        p.check(
            (5..=6200).contains(&r.max_file_size_mb),
            "redshift.max_file_size_mb must be 5–6200".into(),
        );
        p.check(
            r.poll_initial_ms > 0 && r.poll_max_ms >= r.poll_initial_ms,
            "redshift.poll_* delays are inconsistent".into(),
        );
        p.check(
            r.query_timeout_secs > 0,
            "redshift.query_timeout_secs must be positive".into(),
        );
        for (key, value) in [
            ("redshift.kms_key_id", &r.kms_key_id),
            ("redshift.region", &r.region),
        ] {
            p.check(
                value
                    .as_ref()
                    .is_none_or(|v| !v.is_empty() && !v.contains('\'') && !v.contains('\\')),
                format!("{key} must not be empty or contain quotes"),
            );
        }
    }

    /// The buckets, the archive and the links.
    fn check_storage(&self, p: &mut Problems) {
        p.check(
            is_bucket(&self.upload.bucket),
            format!(
                "upload.bucket {:?} is not a bucket name",
                self.upload.bucket
            ),
        );
        p.check(
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
            p.check(
                !prefix.starts_with('/') && !prefix.contains('\'') && !prefix.contains('\\'),
                format!("{key} must not start with / or contain quotes"),
            );
        }
        p.check(
            (5..=512).contains(&self.archive.part_size_mib),
            "archive.part_size_mib must be 5–512".into(),
        );
        // An archive is never much larger than the data in it (stored blocks and ZIP records
        // add well under 1 %), so within this cap it fits in S3's 10,000 parts.
        let capacity = crate::archive::sink::capacity(u64::from(self.archive.part_size_mib) << 20);
        p.check(
            self.archive.max_uncompressed_bytes <= capacity / 100 * 99,
            format!(
                "archive.max_uncompressed_bytes must be at most {} (99 % of what S3's 10,000 parts hold with archive.part_size_mib = {})",
                capacity / 100 * 99,
                self.archive.part_size_mib
            ),
        );
        p.check(
            self.archive.max_uncompressed_bytes > 0
                && self.archive.max_inflate_ratio > 0
                && self.archive.max_archive_secs > 0,
            "archive.max_uncompressed_bytes, max_inflate_ratio and max_archive_secs must be positive".into(),
        );
        p.check(
            (1..=8).contains(&self.archive.uploads_in_flight),
            "archive.uploads_in_flight must be 1–8".into(),
        );
        p.check(
            self.archive.decode_threads <= 256,
            "archive.decode_threads must be 0 (one per CPU) to 256".into(),
        );
        p.check(
            self.archive.range_size_mib <= 512 && self.archive.read_ahead_mib <= 4096,
            "archive.range_size_mib must be 0 (one GET per part) to 512 and archive.read_ahead_mib at most 4096".into(),
        );
        p.check(
            self.archive.spill_mib == 0
                || (self.archive.spill_mib <= 1 << 20
                    && std::path::Path::new(&self.archive.spill_dir).is_absolute()),
            "archive.spill_mib must be 0 (no spilling) to 1048576, with archive.spill_dir an absolute path".into(),
        );
        p.check(
            (1..=9).contains(&self.archive.compression_level),
            "archive.compression_level must be 1–9".into(),
        );
        p.check(
            self.archive.server_side_encryption == ServerSideEncryption::Kms
                || self.archive.kms_key_id.is_none(),
            "archive.kms_key_id needs archive.server_side_encryption = \"aws:kms\"".into(),
        );
        p.check(
            (60..=604_800).contains(&self.presign.expiry_secs),
            "presign.expiry_secs must be 60–604800 (7 days)".into(),
        );
    }

    /// The sender, the recipients and the transport.
    fn check_email(&self, p: &mut Problems) {
        p.check(
            crate::message::EmailAddress::parse(&self.email.from).is_ok(),
            format!("email.from {:?} is not an email address", self.email.from),
        );
        for (key, list) in [
            ("email.default_recipients", &self.email.default_recipients),
            ("email.operator_recipients", &self.email.operator_recipients),
        ] {
            for r in list {
                p.check(
                    crate::message::EmailAddress::parse(r).is_ok(),
                    format!("{key}: {r:?} is not an email address"),
                );
            }
        }
        if self.email.transport == EmailTransport::Smtp {
            p.check(
                !self.email.smtp.host.is_empty(),
                "email.smtp.host is empty".into(),
            );
            p.check(
                self.email.smtp.username.is_some() == self.email.smtp.password.is_some(),
                "set both email.smtp.username and email.smtp.password, or neither".into(),
            );
            p.check(
                self.email.smtp.username.is_none() || self.email.smtp.tls != SmtpTls::None,
                "email.smtp.username needs TLS: with tls = \"none\" the password would cross the network in clear text".into(),
            );
        }
    }

    /// Raw SQL, the sweeper and the worker's limits.
    fn check_worker(&self, p: &mut Problems) {
        p.check(
            !self.sql.allow_raw || !self.sql.allowed_schemas.is_empty(),
            "sql.allow_raw needs sql.allowed_schemas: the schemas raw SQL may read".into(),
        );
        p.check(
            self.sql.allowed_schemas.iter().all(|schema| {
                !crate::sqlcheck::SYSTEM_SCHEMAS.contains(&schema.to_ascii_lowercase().as_str())
            }),
            "sql.allowed_schemas must not name a system schema (pg_catalog, information_schema, …)"
                .into(),
        );
        let sw = &self.sweeper;
        p.check(
            sw.interval_secs >= 1,
            "sweeper.interval_secs must be at least 1".into(),
        );
        p.check(
            sw.idle_secs
                > u64::from(self.queue.visibility_timeout_secs)
                    + u64::from(self.worker.retry_delay_secs),
            format!(
                "sweeper.idle_secs ({}) must exceed queue.visibility_timeout_secs + worker.retry_delay_secs ({}): a request waiting for its message to come back is not lost",
                sw.idle_secs,
                u64::from(self.queue.visibility_timeout_secs)
                    + u64::from(self.worker.retry_delay_secs)
            ),
        );
        p.check(
            self.admin.listen.is_empty() || self.admin.address().is_some(),
            format!(
                "admin.listen {:?} is not an IP address and port (e.g. 0.0.0.0:9464); leave it empty to disable the listener",
                self.admin.listen
            ),
        );
        p.check(
            self.worker.max_attempts >= 1,
            "worker.max_attempts must be at least 1".into(),
        );
        p.check(
            self.worker.max_concurrent_jobs >= 1,
            "worker.max_concurrent_jobs must be at least 1 (0 would never receive)".into(),
        );
        p.check(
            self.worker.max_concurrent_archives >= 1,
            "worker.max_concurrent_archives must be at least 1 (0 would stop every job in ARCHIVING)".into(),
        );
    }

    /// The query templates and the sample mapping onto one.
    fn check_templates(&self, p: &mut Problems) {
        for (name, spec) in &self.templates {
            if !crate::message::is_template_name(name) {
                p.0.push(format!(
                    "template name {name:?} must be 1–{} characters from [A-Za-z0-9_.-]",
                    crate::message::MAX_NAME
                ));
            }
            if let Err(e) = spec.check(name) {
                p.0.push(e);
            }
        }
        if let Some(t) = &self.compat.sample_template {
            match self.templates.get(t) {
                None => {
                    p.0.push(format!("compat.sample_template {t:?} is not a template"))
                }
                Some(spec) => {
                    for param in self.compat.sample_params.values() {
                        if !spec.params.contains_key(param) {
                            p.0.push(format!("compat.sample_params maps to {param:?}, which template {t:?} does not declare"));
                        }
                    }
                }
            }
        }
    }
}

/// Every problem found so far.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check(&mut self, ok: bool, problem: String) {
        if !ok {
            self.0.push(problem);
        }
    }
}

fn is_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}
