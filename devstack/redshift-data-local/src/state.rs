//! The emulator's memory: statements and their lifecycle, ClientToken idempotency, the log of
//! every SQL text executed, the fault-injection settings and concurrency statistics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::model::{ColumnMetadata, SqlParameter};

/// Seconds since the Unix epoch, as the Data API's timestamps are.
pub fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Statement status, with the Data API's wire names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Submitted,
    Picked,
    Started,
    Finished,
    Failed,
    Aborted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Submitted => "SUBMITTED",
            Status::Picked => "PICKED",
            Status::Started => "STARTED",
            Status::Finished => "FINISHED",
            Status::Failed => "FAILED",
            Status::Aborted => "ABORTED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Finished | Status::Failed | Status::Aborted)
    }
}

/// How GetStatementResult types a column's values (the Data API's type mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Long,
    Double,
    Boolean,
    Blob,
    String,
}

/// The stored result set of a statement that returned rows.
#[derive(Debug)]
pub struct QueryResult {
    pub columns: Vec<ColumnMetadata>,
    pub kinds: Vec<FieldKind>,
    /// PostgreSQL's text output of every value; `None` is SQL NULL.
    pub rows: Vec<Vec<Option<String>>>,
}

/// One statement, from ExecuteStatement to its terminal state.
pub struct Statement {
    pub id: String,
    pub sql: String,
    pub parameters: Vec<SqlParameter>,
    pub cluster_identifier: Option<String>,
    pub workgroup_name: Option<String>,
    pub database: String,
    pub db_user: Option<String>,
    pub secret_arn: Option<String>,
    pub statement_name: Option<String>,
    pub result_format: String,
    pub status: Status,
    pub error: Option<String>,
    pub created_at: f64,
    pub updated_at: f64,
    /// Set once the statement is terminal (nanoseconds from submission).
    pub duration_ns: Option<i64>,
    pub result_rows: i64,
    pub result_size: i64,
    pub has_result_set: bool,
    pub redshift_query_id: i64,
    pub redshift_pid: i64,
    pub result: Option<Arc<QueryResult>>,
    /// Set to true by CancelStatement; the runner watches it.
    pub cancel: watch::Sender<bool>,
    /// Lets CancelStatement interrupt the query inside PostgreSQL.
    pub pg_cancel: Option<tokio_postgres::CancelToken>,
    pub submitted: Instant,
}

/// Fault injection, set at start-up or through the admin API. Counters (`*_next`) are
/// deterministic; rates are random per call.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every Data API call.
    pub latency_ms: u64,
    /// Probability (0–1) that a call fails with ThrottlingException (HTTP 400).
    pub throttle_rate: f64,
    /// Probability (0–1) that a call fails with InternalServerException (HTTP 500).
    pub error_rate: f64,
    /// The next N calls fail with ThrottlingException.
    pub throttle_next: u64,
    /// The next N calls fail with InternalServerException.
    pub error_next: u64,
    /// Operations the call faults apply to (e.g. `ExecuteStatement`); empty means all.
    pub operations: Vec<String>,
    /// The next N statements end FAILED with `fail_message`.
    pub fail_statements: u64,
    pub fail_message: Option<String>,
    /// Statements wait in STARTED until released through the admin API (or cancelled).
    pub hold_statements: bool,
}

/// One executed SQL text.
#[derive(Debug, Clone, Serialize)]
pub struct SqlLogEntry {
    pub seq: u64,
    /// Epoch seconds.
    pub at: f64,
    pub statement_id: String,
    pub sql: String,
    pub parameters: Vec<SqlParameter>,
}

/// Counters for tests of client-side concurrency limits.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Stats {
    /// Statements not yet terminal.
    pub running: u64,
    /// The most statements ever not terminal at once (since start or the last reset).
    pub max_running: u64,
    /// Statements accepted since start.
    pub total: u64,
}

#[derive(Default)]
struct Inner {
    statements: HashMap<String, Statement>,
    client_tokens: HashMap<String, String>,
    order: Vec<String>,
    log: Vec<SqlLogEntry>,
    faults: Faults,
    stats: Stats,
    next_query_id: i64,
}

/// Shared, synchronised state. Every lock is held only for short, non-async sections.
pub struct Registry {
    inner: Mutex<Inner>,
    /// Bumped to wake statements held in STARTED.
    release: watch::Sender<u64>,
}

impl Registry {
    pub fn new(faults: Faults) -> Self {
        Registry {
            inner: Mutex::new(Inner {
                faults,
                next_query_id: 1000,
                ..Inner::default()
            }),
            release: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means another request panicked; the data is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides whether this API call fails by injection; sleeps the injected latency first.
    pub async fn call_fault(&self, operation: &str) -> Result<(), ApiError> {
        let latency = self.lock().faults.latency_ms;
        if latency > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
        }
        let mut inner = self.lock();
        let f = &mut inner.faults;
        if !f.operations.is_empty() && !f.operations.iter().any(|o| o == operation) {
            return Ok(());
        }
        if f.throttle_next > 0 {
            f.throttle_next -= 1;
            return Err(ApiError::throttling());
        }
        if f.error_next > 0 {
            f.error_next -= 1;
            return Err(ApiError::internal("injected internal error"));
        }
        if f.throttle_rate > 0.0 && fastrand::f64() < f.throttle_rate {
            return Err(ApiError::throttling());
        }
        if f.error_rate > 0.0 && fastrand::f64() < f.error_rate {
            return Err(ApiError::internal("injected internal error"));
        }
        Ok(())
    }

    /// Takes one "fail the next statement" token, returning the failure text if one was left.
    pub fn take_statement_failure(&self) -> Option<String> {
        let mut inner = self.lock();
        let f = &mut inner.faults;
        if f.fail_statements == 0 {
            return None;
        }
        f.fail_statements -= 1;
        Some(
            f.fail_message
                .clone()
                .unwrap_or_else(|| "ERROR: injected statement failure".into()),
        )
    }

    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        let releases = !faults.hold_statements;
        self.lock().faults = faults;
        if releases {
            self.release_held();
        }
    }

    pub fn release_held(&self) {
        self.release.send_modify(|g| *g += 1);
    }

    pub fn release_watch(&self) -> watch::Receiver<u64> {
        self.release.subscribe()
    }

    pub fn holding(&self) -> bool {
        self.lock().faults.hold_statements
    }

    /// Returns the id already issued for `token`, if any.
    pub fn id_for_token(&self, token: &str) -> Option<String> {
        self.lock().client_tokens.get(token).cloned()
    }

    /// Registers a new statement (and its ClientToken), logging its SQL text. If another
    /// request registered the same token first, returns that statement's id instead.
    pub fn insert(
        &self,
        mut stmt: Statement,
        client_token: Option<String>,
    ) -> Result<String, String> {
        let mut inner = self.lock();
        if let Some(token) = &client_token
            && let Some(existing) = inner.client_tokens.get(token)
        {
            return Err(existing.clone());
        }
        inner.next_query_id += 1;
        stmt.redshift_query_id = inner.next_query_id;
        let id = stmt.id.clone();
        let seq = inner.log.len() as u64 + 1;
        inner.log.push(SqlLogEntry {
            seq,
            at: stmt.created_at,
            statement_id: id.clone(),
            sql: stmt.sql.clone(),
            parameters: stmt.parameters.clone(),
        });
        if let Some(token) = client_token {
            inner.client_tokens.insert(token, id.clone());
        }
        inner.order.push(id.clone());
        inner.statements.insert(id.clone(), stmt);
        let stats = &mut inner.stats;
        stats.total += 1;
        stats.running += 1;
        stats.max_running = stats.max_running.max(stats.running);
        Ok(id)
    }

    /// Runs `f` on the statement, or answers ResourceNotFoundException.
    pub fn with<T>(&self, id: &str, f: impl FnOnce(&mut Statement) -> T) -> Result<T, ApiError> {
        let mut inner = self.lock();
        match inner.statements.get_mut(id) {
            Some(stmt) => Ok(f(stmt)),
            None => Err(ApiError::not_found(format!(
                "Query does not exist. (Id: {id})"
            ))),
        }
    }

    /// Moves a statement to `status` unless it is already terminal (a cancel wins over a
    /// finishing query). Returns whether the change was made.
    pub fn transition(
        &self,
        id: &str,
        status: Status,
        update: impl FnOnce(&mut Statement),
    ) -> bool {
        let mut inner = self.lock();
        let Some(stmt) = inner.statements.get_mut(id) else {
            return false;
        };
        if stmt.status.is_terminal() {
            return false;
        }
        stmt.status = status;
        stmt.updated_at = now_epoch();
        update(stmt);
        if status.is_terminal() {
            stmt.duration_ns =
                Some(i64::try_from(stmt.submitted.elapsed().as_nanos()).unwrap_or(i64::MAX));
            inner.stats.running = inner.stats.running.saturating_sub(1);
        }
        true
    }

    /// Statements in submission order, newest first, filtered by `keep`.
    pub fn list(
        &self,
        keep: impl Fn(&Statement) -> bool,
        map: impl Fn(&Statement) -> serde_json::Value,
    ) -> Vec<serde_json::Value> {
        let inner = self.lock();
        inner
            .order
            .iter()
            .rev()
            .filter_map(|id| inner.statements.get(id))
            .filter(|s| keep(s))
            .map(map)
            .collect()
    }

    pub fn sql_log(&self, statement_id: Option<&str>) -> Vec<SqlLogEntry> {
        let inner = self.lock();
        inner
            .log
            .iter()
            .filter(|e| statement_id.is_none_or(|id| e.statement_id == id))
            .cloned()
            .collect()
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats
    }

    pub fn reset_stats(&self) {
        let mut inner = self.lock();
        inner.stats.max_running = inner.stats.running;
    }
}
