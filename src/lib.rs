//! `redshift-export-worker`: turns export requests on Amazon SQS into ZIP archives of Amazon
//! Redshift query results, emails a presigned link, and records every step in DynamoDB.
//!
//! The life of one export, and where each step lives:
//! 1. [`worker`] long-polls SQS; [`message`] parses the body into an [`message::ExportRequest`]
//!    (or the message is dead-lettered with its reason).
//! 2. [`job`] records the request in DynamoDB ([`state`]; its failure handling is in
//!    `job::failure`) and checks it: [`template`] renders
//!    the named query with typed, validated parameter literals (raw SQL goes through
//!    [`sqlcheck`]), and recipients are checked against the allow-list ([`policy`], which
//!    every email, success or failure, goes through).
//! 3. [`unload`] wraps the SELECT in an UNLOAD to a per-attempt prefix; [`redshift`] runs it
//!    with a deterministic ClientToken and polls it to the end.
//! 4. [`archive`] streams the unloaded parts into one zip by multipart upload.
//! 5. [`presign`] signs a download link; [`notify`] emails it through SES v2 or SMTP.
//! 6. The request is marked COMPLETED and the message deleted.
//!
//! Whatever happens to a message, [`sweeper`] finds requests that stopped moving with no job
//! holding them and sends them again from their recorded request, or fails them `orphaned`;
//! [`dlq`] is the operator's tool for the dead-letter queue.
//!
//! Every failure is a [`error::JobError`], classified once as transient (retried, then the
//! message is released) or permanent (`FAILED` with a stable `error_code`); AWS SDK errors are
//! classified by [`aws::AwsError`]. [`config`] holds the typed settings, [`cli`] the commands,
//! [`telemetry`] the logging, [`systemd`] the service manager's notifications, [`metrics`]
//! every metric and [`admin`] the HTTP listener that serves them with the health checks.

pub mod admin;
pub mod archive;
pub mod aws;
pub mod check;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dlq;
pub mod error;
pub mod health;
pub mod job;
pub mod message;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod presign;
pub mod redshift;
pub mod retry;
pub mod services;
pub mod shutdown;
pub mod sqlcheck;
pub mod state;
pub mod sweeper;
pub mod systemd;
pub mod telemetry;
pub mod template;
pub mod unload;
pub mod worker;
