//! PostgreSQL itself and the emulator's view of the SQL: rows and CSV as PostgreSQL gives
//! them, the UNLOADs the emulator received and the literals inside them.

use super::*;

/// The rows of `query` from PostgreSQL itself, every value in its text form.
pub async fn pg_rows(query: &str) -> Vec<Vec<Option<String>>> {
    let pg = testkit::pg().await;
    pg.simple_query(query)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// `COPY (query) TO STDOUT WITH (FORMAT csv, HEADER)` from PostgreSQL itself.
pub async fn pg_csv(query: &str) -> String {
    let pg = testkit::pg().await;
    let copy = pg
        .copy_out(&format!(
            "COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER)"
        ))
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = futures_util::TryStreamExt::try_collect(copy).await.unwrap();
    String::from_utf8(chunks.concat()).unwrap()
}

/// Splits CSV text into records (newlines inside quotes stay in their record).
pub fn csv_records(text: &str) -> Vec<String> {
    let mut records = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for ch in text.chars() {
        if ch == '"' {
            quoted = !quoted;
        }
        if ch == '\n' && !quoted {
            records.push(std::mem::take(&mut current));
        } else {
            current.push(ch);
        }
    }
    if !current.is_empty() {
        records.push(current);
    }
    records
}

/// Header, then the data records sorted: PARALLEL ON spreads rows over slices, so only the
/// multiset of rows is defined, as on Redshift.
pub fn header_and_sorted_rows(text: &str) -> (String, Vec<String>) {
    let mut records = csv_records(text);
    assert!(!records.is_empty(), "no header");
    let header = records.remove(0);
    records.sort();
    (header, records)
}

/// The UNLOAD the emulator received for `rid` (its TO path contains the request id).
pub async fn unload_sql(rid: &str) -> Vec<String> {
    let (_, body) = testkit::http(
        "GET",
        &format!("{}/sql-log", var("DEVSTACK_EMULATOR_ADMIN_URL")),
        "",
    )
    .await;
    let log: Value = serde_json::from_str(&body).unwrap();
    log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sql"].as_str().unwrap().to_string())
        .filter(|sql| sql.contains(&format!("/{rid}/")))
        .collect()
}

/// How many UNLOADs the emulator at `emulator_url` received for `rid`.
pub async fn unloads(emulator_url: &str, rid: &str) -> usize {
    let (_, log) = testkit::http("GET", &format!("{emulator_url}/__admin/sql-log"), "").await;
    let log: Value = serde_json::from_str(&log).unwrap();
    log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["sql"].as_str().unwrap().contains(&format!("/{rid}/")))
        .count()
}

/// The string literals of the SELECT inside an UNLOAD, decoded by the emulator's independent
/// implementation of Redshift's lexer.
pub fn select_literals(unload: &str) -> Vec<String> {
    let spec = redshift_data_local::unload::parse::parse_unload(unload).unwrap();
    redshift_data_local::sqltext::tokenize(&spec.select)
        .unwrap()
        .into_iter()
        .filter_map(|t| match t.token {
            redshift_data_local::sqltext::Token::Literal(v) => Some(v),
            _ => None,
        })
        .collect()
}
