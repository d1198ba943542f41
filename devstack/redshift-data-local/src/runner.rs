//! Running one statement in the background: SUBMITTED → PICKED → STARTED → FINISHED | FAILED |
//! ABORTED, on its own PostgreSQL connection so that CancelStatement can interrupt it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::model::ColumnMetadata;
use crate::sqltext::{inline_parameters, starts_with_keyword, tokenize};
use crate::state::{FieldKind, QueryResult, Registry, Status};
use crate::unload::{self, UnloadFailure, UnloadSettings, parse::parse_unload, pg_error_text};

/// What every statement needs from the emulator's configuration.
pub struct RunContext {
    pub registry: Arc<Registry>,
    /// libpq-style connection string without `dbname` (the request's Database is added).
    pub pg_conn: String,
    pub s3: aws_sdk_s3::Client,
    pub unload: UnloadSettings,
    /// Pause between the SUBMITTED, PICKED and STARTED transitions.
    pub step_delay: Duration,
}

/// How a statement ended, before it is recorded.
enum Outcome {
    Rows(QueryResult),
    Done { rows: i64, size: i64 },
    Failed(String),
    Cancelled,
}

/// Session settings that make PostgreSQL read and print SQL the way Redshift does.
const SESSION_SETUP: &str = "SET standard_conforming_strings = off; SET escape_string_warning = off; \
                             SET datestyle = 'ISO, MDY'; SET timezone = 'UTC'; SET intervalstyle = 'postgres'";

/// Drives one statement to a terminal state. Never panics; every failure is recorded.
pub async fn run(ctx: Arc<RunContext>, id: String) {
    let Ok((sql, params, database, mut cancel)) = ctx.registry.with(&id, |s| {
        let params: Vec<(String, String)> = s
            .parameters
            .iter()
            .map(|p| (p.name.clone(), p.value.clone()))
            .collect();
        (
            s.sql.clone(),
            params,
            s.database.clone(),
            s.cancel.subscribe(),
        )
    }) else {
        return;
    };
    tokio::time::sleep(ctx.step_delay).await;
    ctx.registry.transition(&id, Status::Picked, |_| {});
    tokio::time::sleep(ctx.step_delay).await;
    if !ctx.registry.transition(&id, Status::Started, |_| {}) {
        return;
    }
    if wait_while_held(&ctx.registry, &mut cancel).await.is_err() {
        return;
    }
    let outcome = match ctx.registry.take_statement_failure() {
        Some(message) => Outcome::Failed(message),
        None => execute(&ctx, &id, &sql, &params, &database, &mut cancel).await,
    };
    record(&ctx.registry, &id, outcome);
}

/// Waits in STARTED while the hold fault is on. Err means the statement was cancelled.
async fn wait_while_held(
    registry: &Registry,
    cancel: &mut watch::Receiver<bool>,
) -> Result<(), ()> {
    let mut release = registry.release_watch();
    release.mark_unchanged();
    if registry.holding() {
        // One release wakes every statement held at that moment.
        tokio::select! {
            _ = cancel.wait_for(|c| *c) => return Err(()),
            _ = release.changed() => {}
        }
    }
    if *cancel.borrow() { Err(()) } else { Ok(()) }
}

fn record(registry: &Registry, id: &str, outcome: Outcome) {
    match outcome {
        Outcome::Rows(result) => {
            let rows = result.rows.len() as i64;
            let size: usize = result
                .rows
                .iter()
                .flatten()
                .flatten()
                .map(String::len)
                .sum();
            registry.transition(id, Status::Finished, |s| {
                s.result_rows = rows;
                s.result_size = size as i64;
                s.has_result_set = true;
                s.result = Some(Arc::new(result));
            });
        }
        Outcome::Done { rows, size } => {
            registry.transition(id, Status::Finished, |s| {
                s.result_rows = rows;
                s.result_size = size;
            });
        }
        Outcome::Failed(message) => {
            registry.transition(id, Status::Failed, |s| s.error = Some(message));
        }
        Outcome::Cancelled => {
            registry.transition(id, Status::Aborted, |_| {});
        }
    }
}

async fn execute(
    ctx: &RunContext,
    id: &str,
    sql: &str,
    params: &[(String, String)],
    database: &str,
    cancel: &mut watch::Receiver<bool>,
) -> Outcome {
    let conn = format!(
        "{} dbname='{}'",
        ctx.pg_conn,
        database.replace('\\', "\\\\").replace('\'', "\\'")
    );
    let (client, connection) = match tokio_postgres::connect(&conn, NoTls).await {
        Ok(pair) => pair,
        Err(e) => {
            return Outcome::Failed(format!("{} (database \"{database}\")", pg_error_text(&e)));
        }
    };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
    if let Err(e) = client.batch_execute(SESSION_SETUP).await {
        return Outcome::Failed(pg_error_text(&e));
    }
    let pid = backend_pid(&client).await;
    let token = client.cancel_token();
    let _ = ctx.registry.with(id, |s| {
        s.redshift_pid = pid;
        s.pg_cancel = Some(token);
    });
    if *cancel.borrow() {
        return Outcome::Cancelled;
    }

    let tokens = match tokenize(sql) {
        Ok(t) => t,
        Err(e) => return Outcome::Failed(format!("ERROR: {e}")),
    };
    let sql = inline_parameters(sql, &tokens, params);
    if starts_with_keyword(&tokens, "unload") {
        let spec = match parse_unload(&sql) {
            Ok(spec) => spec,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        return match unload::run(&client, &ctx.s3, &spec, &ctx.unload, cancel).await {
            Ok(done) => Outcome::Done {
                rows: done.rows as i64,
                size: done.bytes as i64,
            },
            Err(UnloadFailure::Cancelled) => Outcome::Cancelled,
            Err(UnloadFailure::Error(_)) if *cancel.borrow() => Outcome::Cancelled,
            Err(UnloadFailure::Error(message)) => Outcome::Failed(message),
        };
    }
    match query(&client, &sql, cancel).await {
        Err(_) if *cancel.borrow() => Outcome::Cancelled,
        other => other.unwrap_or_else(Outcome::Failed),
    }
}

async fn backend_pid(client: &tokio_postgres::Client) -> i64 {
    let messages = client
        .simple_query("SELECT pg_backend_pid()")
        .await
        .unwrap_or_default();
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
        .unwrap_or(0)
}

/// Runs a plain statement and keeps its result set, if it has one.
async fn query(
    client: &tokio_postgres::Client,
    sql: &str,
    cancel: &mut watch::Receiver<bool>,
) -> Result<Outcome, String> {
    // Preparing first rejects multiple statements, as the Data API does, and gives the types.
    let stmt = client.prepare(sql).await.map_err(|e| pg_error_text(&e))?;
    let stream = client
        .simple_query_raw(sql)
        .await
        .map_err(|e| pg_error_text(&e))?;
    let mut stream = std::pin::pin!(stream);
    let mut rows = Vec::new();
    let mut affected = 0i64;
    loop {
        let message = tokio::select! {
            biased;
            _ = cancel.wait_for(|c| *c) => return Ok(Outcome::Cancelled),
            m = stream.next() => m,
        };
        match message {
            None => break,
            Some(Err(e)) => return Err(pg_error_text(&e)),
            Some(Ok(SimpleQueryMessage::Row(row))) => {
                rows.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_string))
                        .collect(),
                );
            }
            Some(Ok(SimpleQueryMessage::CommandComplete(n))) => affected = n as i64,
            Some(Ok(_)) => {}
        }
    }
    if stmt.columns().is_empty() {
        return Ok(Outcome::Done {
            rows: affected,
            size: -1,
        });
    }
    let (columns, kinds) = stmt.columns().iter().map(column_metadata).unzip();
    Ok(Outcome::Rows(QueryResult {
        columns,
        kinds,
        rows,
    }))
}

fn column_metadata(c: &tokio_postgres::Column) -> (ColumnMetadata, FieldKind) {
    let type_name = c.type_().name().to_string();
    let typmod = c.type_modifier();
    let (kind, signed, case_sensitive) = match type_name.as_str() {
        "int2" | "int4" | "int8" | "oid" => (FieldKind::Long, true, false),
        "float4" | "float8" => (FieldKind::Double, true, false),
        "numeric" => (FieldKind::String, true, false),
        "bool" => (FieldKind::Boolean, false, false),
        "bytea" => (FieldKind::Blob, false, false),
        "varchar" | "bpchar" | "text" | "name" => (FieldKind::String, false, true),
        _ => (FieldKind::String, false, false),
    };
    let (length, precision, scale) = match type_name.as_str() {
        "varchar" | "bpchar" if typmod >= 4 => (i64::from(typmod - 4), i64::from(typmod - 4), 0),
        "numeric" if typmod >= 4 => (
            0,
            i64::from((typmod - 4) >> 16),
            i64::from((typmod - 4) & 0xffff),
        ),
        _ => (0, 0, 0),
    };
    let meta = ColumnMetadata {
        name: c.name().to_string(),
        label: c.name().to_string(),
        type_name,
        length,
        precision,
        scale,
        nullable: 1,
        is_signed: signed,
        is_case_sensitive: case_sensitive,
        is_currency: false,
        schema_name: String::new(),
        table_name: String::new(),
    };
    (meta, kind)
}
