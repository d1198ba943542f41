//! `redshift-export-worker`: turns export requests on Amazon SQS into ZIP archives of Amazon
//! Redshift query results, emails a presigned link, and records every step in DynamoDB.
//! docs/ARCHITECTURE.md tells the same story at more length.
//!
//! The life of one export, and where each step lives:
//! 1. [`worker`] long-polls SQS and runs each message's job under supervision next to a
//!    heartbeat; [`message`] parses the body into an [`message::ExportRequest`] (or the
//!    message is dead-lettered with its reason).
//! 2. [`job`] records the request in DynamoDB ([`state`]), claims it, and checks it with
//!    [`policy`]: [`template`] renders the named query with typed, validated parameter
//!    literals (raw SQL goes through [`sqlcheck`]), and recipients are checked against the
//!    allow-list, which every email, success or failure, goes through.
//! 3. `job::stages` runs the stage machine: [`unload`] wraps the SELECT in an UNLOAD to a
//!    per-attempt prefix and [`redshift`] runs it with a deterministic ClientToken; [`archive`]
//!    decodes and verifies the unloaded parts on every core and streams them into one zip
//!    without compressing anything again (PutObject or multipart upload); [`presign`] signs a
//!    download link and [`notify`] emails it through SES v2 or SMTP; the request is marked
//!    COMPLETED and the message deleted.
//!
//! Whatever happens to a message, [`sweeper`] finds requests that stopped moving with no job
//! holding them and sends them again from their recorded request, or fails them `orphaned`;
//! [`dlq`] is the operator's tool for the dead-letter queue.
//!
//! Every failure is an [`error::JobError`], classified once as transient (retried by the one
//! policy of [`retry`], then the message is released) or permanent (`FAILED` with a stable
//! `error_code`); AWS SDK errors are classified by [`aws::AwsError`].
//!
//! Around them: [`cli`] (one file per command) and [`daemon`] (the daemon's wiring) start
//! everything; [`services`] is the composition root; [`shutdown`] the one shutdown tree;
//! [`config`] the typed settings and [`check`] the probes of `check`; [`health`] what the
//! daemon knows of its own health, served with [`metrics`] by [`admin`]; [`telemetry`] the
//! logging and [`systemd`] the service manager's notifications.

pub mod admin;
pub mod archive;
pub mod aws;
pub mod check;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dlq;
pub mod error;
pub mod events;
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
