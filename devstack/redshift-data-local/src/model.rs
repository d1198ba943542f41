//! Request and response shapes of the Data API operations the emulator implements, in the
//! service's wire names (PascalCase members, epoch-second timestamps).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SqlParameter {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecuteStatementInput {
    pub sql: Option<String>,
    pub cluster_identifier: Option<String>,
    pub workgroup_name: Option<String>,
    pub database: Option<String>,
    pub db_user: Option<String>,
    pub secret_arn: Option<String>,
    pub parameters: Option<Vec<SqlParameter>>,
    pub statement_name: Option<String>,
    pub with_event: Option<bool>,
    pub client_token: Option<String>,
    pub session_keep_alive_seconds: Option<i64>,
    pub session_id: Option<String>,
    pub result_format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IdInput {
    pub id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetStatementResultInput {
    pub id: String,
    pub next_token: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListStatementsInput {
    pub next_token: Option<String>,
    pub max_results: Option<i64>,
    pub statement_name: Option<String>,
    pub status: Option<String>,
    pub role_level: Option<bool>,
    pub database: Option<String>,
    pub cluster_identifier: Option<String>,
    pub workgroup_name: Option<String>,
}

/// `ColumnMetadata` of GetStatementResult.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ColumnMetadata {
    pub name: String,
    pub label: String,
    pub type_name: String,
    pub length: i64,
    pub precision: i64,
    pub scale: i64,
    /// 0 = not nullable, 1 = nullable, 2 = unknown (JDBC's convention, an integer on the wire).
    pub nullable: i64,
    pub is_signed: bool,
    pub is_case_sensitive: bool,
    pub is_currency: bool,
    pub schema_name: String,
    pub table_name: String,
}

/// One `Field` union member.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum Field {
    IsNull(bool),
    BooleanValue(bool),
    LongValue(i64),
    DoubleValue(f64),
    StringValue(String),
    BlobValue(String),
}
