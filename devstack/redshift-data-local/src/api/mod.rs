//! HTTP: the Data API (awsJson1_1, `POST /` with `X-Amz-Target: RedshiftData.<Operation>`) and
//! the emulator's own admin endpoints under `/__admin/` ([`admin`]); a finished statement's
//! rows are paged out by [`results`].

mod admin;
mod results;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::model::{ExecuteStatementInput, IdInput, ListStatementsInput, SqlParameter};
use crate::runner::{self, RunContext};
use crate::sqltext::{placeholders, tokenize};
use crate::state::{Statement, Status, now_epoch};

/// Shared by every request.
pub struct App {
    pub ctx: Arc<RunContext>,
    /// Rows per GetStatementResult page.
    pub page_rows: usize,
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", post(data_api))
        .merge(admin::routes())
        .with_state(app)
}

async fn data_api(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(operation) = target.strip_prefix("RedshiftData.") else {
        return ApiError::unknown_operation(target).into_response();
    };
    let result = match app.ctx.registry.call_fault(operation).await {
        Err(e) => Err(e),
        Ok(()) => match operation {
            "ExecuteStatement" => parse(&body).and_then(|i| execute_statement(&app, i)),
            "DescribeStatement" => {
                parse(&body).and_then(|i: IdInput| describe_statement(&app, &i.id))
            }
            "GetStatementResult" => {
                parse(&body).and_then(|i| results::get_statement_result(&app, i))
            }
            "CancelStatement" => parse(&body).and_then(|i: IdInput| cancel_statement(&app, &i.id)),
            "ListStatements" => parse(&body).and_then(|i| list_statements(&app, i)),
            other => Err(ApiError::unknown_operation(other)),
        },
    };
    match result {
        Ok(value) => {
            let mut resp = (StatusCode::OK, value.to_string()).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-amz-json-1.1"),
            );
            resp
        }
        Err(e) => {
            tracing::debug!(operation, error = %e, "request rejected");
            e.into_response()
        }
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::serialization(format!("cannot read request: {e}")))
}

/// Inserts `key: value` into a JSON object when the value is present.
fn put_opt(obj: &mut Value, key: &str, value: &Option<String>) {
    if let Some(v) = value {
        obj[key] = json!(v);
    }
}

fn is_cluster_identifier(s: &str) -> bool {
    // ^[a-z][a-z0-9]*(-[a-z0-9]+)*$, 1–63 characters.
    (1..=63).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && !s.contains("--")
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The Data API's checks of the statement's size, sessions and target (one of a cluster or a
/// workgroup; one of a secret or a database user).
fn check_request(sql: &str, input: &ExecuteStatementInput) -> Result<(), ApiError> {
    if sql.len() > 100 * 1024 {
        return Err(ApiError::validation(
            "The SQL statement exceeds the 100 KB limit",
        ));
    }
    if input.session_id.is_some() || input.session_keep_alive_seconds.is_some() {
        return Err(ApiError::validation(
            "Sessions (SessionId, SessionKeepAliveSeconds) are not supported by redshift-data-local",
        ));
    }
    match (&input.cluster_identifier, &input.workgroup_name) {
        (Some(_), Some(_)) => {
            return Err(ApiError::validation(
                "Only one of ClusterIdentifier or WorkgroupName can be specified",
            ));
        }
        (None, None) => {
            return Err(ApiError::validation(
                "Either ClusterIdentifier or WorkgroupName must be specified",
            ));
        }
        (Some(c), None) if !is_cluster_identifier(c) => {
            return Err(ApiError::validation(format!(
                "Invalid ClusterIdentifier {c:?}"
            )));
        }
        _ => {}
    }
    if input.secret_arn.is_some() && input.db_user.is_some() {
        return Err(ApiError::validation(
            "Only one of SecretArn or DbUser can be specified",
        ));
    }
    Ok(())
}

fn execute_statement(app: &App, mut input: ExecuteStatementInput) -> Result<Value, ApiError> {
    let sql = input.sql.take().filter(|s| !s.trim().is_empty()).ok_or_else(|| {
        ApiError::validation("1 validation error detected: Value at 'sql' failed to satisfy constraint: Member must not be null")
    })?;
    check_request(&sql, &input)?;
    let database = input
        .database
        .filter(|d| !d.is_empty())
        .ok_or_else(|| ApiError::validation("Database is required"))?;
    let result_format = input.result_format.unwrap_or_else(|| "JSON".into());
    if result_format != "JSON" && result_format != "CSV" {
        return Err(ApiError::validation(format!(
            "Invalid ResultFormat {result_format:?}: expected JSON or CSV"
        )));
    }
    let parameters = input.parameters.unwrap_or_default();
    check_parameters(&sql, &parameters)?;
    if let Some(token) = &input.client_token {
        if !(1..=64).contains(&token.len()) {
            return Err(ApiError::validation(
                "ClientToken must be 1 to 64 characters",
            ));
        }
        if let Some(id) = app.ctx.registry.id_for_token(token) {
            return execute_response(app, &id);
        }
    }
    let now = now_epoch();
    let stmt = Statement {
        id: uuid::Uuid::new_v4().to_string(),
        sql,
        parameters,
        cluster_identifier: input.cluster_identifier,
        workgroup_name: input.workgroup_name,
        database,
        db_user: input.db_user,
        secret_arn: input.secret_arn,
        statement_name: input.statement_name,
        result_format,
        status: Status::Submitted,
        error: None,
        created_at: now,
        updated_at: now,
        duration_ns: None,
        result_rows: -1,
        result_size: -1,
        has_result_set: false,
        redshift_query_id: 0,
        redshift_pid: 0,
        result: None,
        cancel: watch::channel(false).0,
        pg_cancel: None,
        submitted: Instant::now(),
    };
    let id = match app.ctx.registry.insert(stmt, input.client_token) {
        Ok(id) => {
            tokio::spawn(runner::run(app.ctx.clone(), id.clone()));
            id
        }
        // Another request with the same ClientToken got there first.
        Err(existing) => existing,
    };
    execute_response(app, &id)
}

/// Parameter rules of the Data API, including the "unused parameters" error that UNLOAD hits
/// because placeholders inside its quoted SELECT are not bound.
fn check_parameters(sql: &str, parameters: &[SqlParameter]) -> Result<(), ApiError> {
    if parameters.is_empty() {
        return Ok(());
    }
    for (i, p) in parameters.iter().enumerate() {
        if p.name.is_empty()
            || !p
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(ApiError::validation(format!(
                "Invalid parameter name {:?}: must match ^[0-9a-zA-Z_]+$",
                p.name
            )));
        }
        if p.value.is_empty() {
            return Err(ApiError::validation(format!(
                "Parameter {:?} has an empty value",
                p.name
            )));
        }
        if parameters[..i].iter().any(|o| o.name == p.name) {
            return Err(ApiError::validation(format!(
                "Parameter {:?} is specified more than once",
                p.name
            )));
        }
    }
    let used = tokenize(sql).map(|t| placeholders(&t)).unwrap_or_default();
    let unused: Vec<&str> = parameters
        .iter()
        .map(|p| p.name.as_str())
        .filter(|n| !used.iter().any(|u| u == n))
        .collect();
    if !unused.is_empty() {
        return Err(ApiError::validation(format!(
            "Parameters list contains unused parameters. Unused parameters: [{}]",
            unused.join(", ")
        )));
    }
    Ok(())
}

fn execute_response(app: &App, id: &str) -> Result<Value, ApiError> {
    app.ctx.registry.with(id, |s| {
        let mut out = json!({ "Id": s.id, "CreatedAt": s.created_at, "Database": s.database });
        put_opt(&mut out, "ClusterIdentifier", &s.cluster_identifier);
        put_opt(&mut out, "WorkgroupName", &s.workgroup_name);
        put_opt(&mut out, "DbUser", &s.db_user);
        put_opt(&mut out, "SecretArn", &s.secret_arn);
        out
    })
}

fn describe_statement(app: &App, id: &str) -> Result<Value, ApiError> {
    app.ctx.registry.with(id, |s| {
        let mut out = json!({
            "Id": s.id,
            "Status": s.status.as_str(),
            "Duration": s.duration_ns.unwrap_or(-1),
            "ResultRows": s.result_rows,
            "ResultSize": s.result_size,
            "HasResultSet": s.has_result_set,
            "QueryString": s.sql,
            "CreatedAt": s.created_at,
            "UpdatedAt": s.updated_at,
            "Database": s.database,
            "RedshiftQueryId": s.redshift_query_id,
            "RedshiftPid": s.redshift_pid,
            "ResultFormat": s.result_format,
        });
        if !s.parameters.is_empty() {
            out["QueryParameters"] = json!(s.parameters);
        }
        put_opt(&mut out, "Error", &s.error);
        put_opt(&mut out, "ClusterIdentifier", &s.cluster_identifier);
        put_opt(&mut out, "WorkgroupName", &s.workgroup_name);
        put_opt(&mut out, "DbUser", &s.db_user);
        put_opt(&mut out, "SecretArn", &s.secret_arn);
        out
    })
}

fn cancel_statement(app: &App, id: &str) -> Result<Value, ApiError> {
    let status = app.ctx.registry.with(id, |s| s.status)?;
    if status.is_terminal() || !app.ctx.registry.transition(id, Status::Aborted, |_| {}) {
        return Err(ApiError::validation(format!(
            "Could not cancel a query that is already in {} state with ID: {id}",
            status.as_str()
        )));
    }
    let token = app.ctx.registry.with(id, |s| {
        s.cancel.send_replace(true);
        s.pg_cancel.take()
    })?;
    if let Some(token) = token {
        tokio::spawn(async move {
            if let Err(e) = token.cancel_query(tokio_postgres::NoTls).await {
                tracing::warn!(error = %e, "cancel request to postgres failed");
            }
        });
    }
    Ok(json!({ "Status": true }))
}

fn list_statements(app: &App, input: ListStatementsInput) -> Result<Value, ApiError> {
    // "By default, only finished statements are shown."
    let wanted = input.status.unwrap_or_else(|| "FINISHED".into());
    let valid = [
        "SUBMITTED",
        "PICKED",
        "STARTED",
        "FINISHED",
        "FAILED",
        "ABORTED",
        "ALL",
    ];
    if !valid.contains(&wanted.as_str()) {
        return Err(ApiError::validation(format!("Invalid Status {wanted:?}")));
    }
    let max = match input.max_results {
        None | Some(0) => 100,
        Some(n) if (1..=100).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::validation(format!(
                "MaxResults must be 0 to 100, got {n}"
            )));
        }
    };
    let start = match &input.next_token {
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| ApiError::validation("Invalid NextToken"))?,
    };
    let all = app.ctx.registry.list(
        |s| {
            (wanted == "ALL" || s.status.as_str() == wanted)
                && input
                    .statement_name
                    .as_ref()
                    .is_none_or(|p| s.statement_name.as_ref().is_some_and(|n| n.starts_with(p)))
                && input.database.as_ref().is_none_or(|d| *d == s.database)
                && input
                    .cluster_identifier
                    .as_ref()
                    .is_none_or(|c| s.cluster_identifier.as_ref() == Some(c))
                && input
                    .workgroup_name
                    .as_ref()
                    .is_none_or(|w| s.workgroup_name.as_ref() == Some(w))
        },
        |s| {
            let mut out = json!({
                "Id": s.id,
                "QueryString": s.sql,
                "Status": s.status.as_str(),
                "CreatedAt": s.created_at,
                "UpdatedAt": s.updated_at,
                "IsBatchStatement": false,
                "ResultFormat": s.result_format,
            });
            put_opt(&mut out, "StatementName", &s.statement_name);
            put_opt(&mut out, "SecretArn", &s.secret_arn);
            if !s.parameters.is_empty() {
                out["QueryParameters"] = json!(s.parameters);
            }
            out
        },
    );
    let end = (start + max).min(all.len());
    let mut out = json!({ "Statements": all[start.min(end)..end] });
    if end < all.len() {
        out["NextToken"] = json!(end.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_identifier_pattern() {
        assert!(is_cluster_identifier("redshift-cluster-1"));
        assert!(!is_cluster_identifier("Redshift"));
        assert!(!is_cluster_identifier("a--b"));
        assert!(!is_cluster_identifier("ends-"));
    }

    #[test]
    fn unused_parameters_inside_unload_literal_are_rejected() {
        let params = vec![SqlParameter {
            name: "id".into(),
            value: "1".into(),
        }];
        let e = check_parameters(
            "unload ('select * from t where id = :id') to 's3://b/p' iam_role default",
            &params,
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "Parameters list contains unused parameters. Unused parameters: [id]"
        );
        assert!(check_parameters("select * from t where id = :id", &params).is_ok());
    }
}
