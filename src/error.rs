//! The job error type. Every failure is classified here, once, as transient (retry, then
//! release the message) or permanent (record `FAILED` with a stable `error_code`).

use crate::aws::AwsError;
use crate::message::MessageError;
use crate::template::ParamError;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The message is not a valid request.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// A request that is well-formed but not acceptable (template, parameters, SQL, recipients).
    #[error("{message}")]
    Rejected { code: &'static str, message: String },
    /// An AWS call failed; the classifier decided whether it is worth retrying.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// Redshift ran the statement and it failed (the database's error text, redacted).
    #[error("the query failed: {}", redact(.0))]
    QueryFailed(String),
    /// The statement ended ABORTED without this worker asking for it.
    #[error("the query was aborted in Redshift")]
    QueryAborted,
    #[error("the query ran longer than {0} s and was cancelled")]
    QueryTimeout(u64),
    /// The unloaded data could not be turned into an archive (bad manifest, corrupt part).
    #[error("the archive could not be built: {0}")]
    Archive(String),
    /// A part kept on the worker's local disk was not read back as it was written; the attempt
    /// is retried, reading the part from S3 (`archive/spill.rs`).
    #[error("a part kept on local disk could not be read back: {0}")]
    Spill(String),
    /// The email was not accepted (the transport's reply, redacted: it can quote addresses).
    #[error("the email could not be sent: {}", redact(.message))]
    Email { message: String, transient: bool },
    /// Someone asked for the request to be cancelled.
    #[error("the export was cancelled")]
    Cancelled,
    /// The request's state item holds what this version cannot read (e.g. a status written by
    /// a newer version during a rolling upgrade); the item is left untouched.
    #[error("the request's state item cannot be read by this version: {0}")]
    Unreadable(String),
    /// Another worker changed the request first; this one must stop without side effects.
    #[error("the request was changed by another worker ({0})")]
    Conflict(String),
}

/// Longest piece of outside text (a database error, a mail server's reply) kept in a record.
const MAX_QUOTED_CHARS: usize = 1_000;

/// Text from outside the worker — an SMTP or SES reply, a database or AWS error — made safe
/// to log, store and print: email addresses become `<address>`, control characters become
/// spaces (so `status` never prints a terminal escape), and the length is capped.
pub fn redact(text: &str) -> String {
    static ADDRESS: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    #[expect(clippy::expect_used, reason = "a constant pattern that compiles")]
    let address = ADDRESS.get_or_init(|| {
        regex::Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)+")
            .expect("address pattern")
    });
    let text: String = text
        .chars()
        .take(MAX_QUOTED_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    address.replace_all(&text, "<address>").into_owned()
}

impl JobError {
    pub fn rejected(code: &'static str, message: impl Into<String>) -> Self {
        JobError::Rejected {
            code,
            message: message.into(),
        }
    }

    /// Stable, machine-readable code recorded as `error_code`.
    pub fn code(&self) -> &'static str {
        match self {
            JobError::Message(e) => e.code,
            JobError::Rejected { code, .. } => code,
            JobError::Aws(e) if e.transient => "aws_unavailable",
            JobError::Aws(_) => "aws_error",
            JobError::QueryFailed(_) => "query_failed",
            JobError::QueryAborted => "query_aborted",
            JobError::QueryTimeout(_) => "query_timeout",
            JobError::Archive(_) => "archive_failed",
            JobError::Spill(_) => "spill_failed",
            JobError::Email { .. } => "email_failed",
            JobError::Cancelled => "cancelled",
            JobError::Unreadable(_) => "unreadable_state",
            JobError::Conflict(_) => "conflict",
        }
    }

    /// True when trying again later can succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            JobError::Aws(e) => e.transient,
            JobError::Email { transient, .. } => *transient,
            JobError::Spill(_) => true,
            _ => false,
        }
    }

    /// A sentence for a person receiving a failure email: no SQL, no internals.
    pub fn plain_words(&self) -> &'static str {
        match self.code() {
            "unknown_template" => "The requested export does not exist.",
            "missing_parameter" | "unknown_parameter" | "invalid_parameter" => {
                "The export request had missing or invalid parameters."
            }
            "query_failed" | "query_aborted" => "The database could not run the export query.",
            "query_timeout" => "The export query took too long and was stopped.",
            "recipient_not_allowed" | "invalid_recipient" | "too_many_recipients" => {
                "The export request named recipients that are not allowed."
            }
            "cancelled" => "The export was cancelled.",
            "attempts_exhausted" => "The export failed repeatedly and was given up.",
            "orphaned" => "The export stopped and could not be resumed.",
            "export_too_large" => "The export is larger than this service allows.",
            "archive_timeout" => "Packing the export took too long and was stopped.",
            "dead_lettered" => "The export was stopped by an operator.",
            _ => "The export could not be completed.",
        }
    }
}

impl From<ParamError> for JobError {
    fn from(e: ParamError) -> Self {
        JobError::Rejected {
            code: e.code,
            message: e.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_text_loses_addresses_and_control_characters() {
        let smtp = "550 5.1.1 <victim.name+tag@mail.example.co.uk>: Recipient address rejected";
        assert_eq!(
            redact(smtp),
            "550 5.1.1 <<address>>: Recipient address rejected"
        );
        assert_eq!(redact("bad\u{1b}[2Jvalue\n"), "bad [2Jvalue ");
        assert_eq!(redact(&"x".repeat(5_000)).len(), MAX_QUOTED_CHARS);
        let e = JobError::Email {
            message: "Email address is not verified: a@b.example".into(),
            transient: false,
        };
        assert!(!e.to_string().contains("a@b"), "{e}");
        let q = JobError::QueryFailed("duplicate key ops@example.com".into());
        assert!(!q.to_string().contains("ops@"), "{q}");
    }
}
