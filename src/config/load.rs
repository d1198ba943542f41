//! Reading the file and the environment overrides, then every check that types alone cannot
//! make, with all problems reported together.

use std::path::Path;

use super::{EmailTransport, ServerSideEncryption, Settings};

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
