//! The `[email]` section: the sender, recipients, allow-list, templates and the transport
//! (SES v2 or SMTP).

use serde::Deserialize;

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
    /// Also email the recipients when an export fails. Failure emails go only to recipients
    /// that passed the allow-list; a request rejected for its recipients mails none of them.
    #[serde(default)]
    pub notify_on_failure: bool,
    /// Told (with `notify_on_failure`) when a request is rejected for its recipients, since
    /// those recipients are never mailed. Empty: nobody is told.
    #[serde(default)]
    pub operator_recipients: Vec<String>,
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
