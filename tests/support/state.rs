//! The request's record in DynamoDB: its state item, its history, waiting for a status, a
//! state table of a test's own.

use super::*;

/// The state item's attributes as strings.
pub async fn state(rid: &str) -> Option<HashMap<String, String>> {
    state_in(&var("DEVSTACK_TABLE"), rid).await
}

/// The state item's attributes as strings, from `table`.
pub async fn state_in(table: &str, rid: &str) -> Option<HashMap<String, String>> {
    let out = dynamodb()
        .get_item()
        .table_name(table)
        .key("request_id", AttributeValue::S(rid.into()))
        .key("sk", AttributeValue::S("state".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    out.item.map(|item| {
        item.into_iter()
            .map(|(k, v)| {
                let s = match v {
                    AttributeValue::S(s) | AttributeValue::N(s) => s,
                    other => format!("{other:?}"),
                };
                (k, s)
            })
            .collect()
    })
}

/// Waits (at most `secs`) for the request to be COMPLETED, FAILED or CANCELLED.
pub async fn wait_terminal(rid: &str, secs: u64) -> HashMap<String, String> {
    wait_terminal_in(&var("DEVSTACK_TABLE"), rid, secs).await
}

/// [`wait_terminal`] in `table`.
pub async fn wait_terminal_in(table: &str, rid: &str, secs: u64) -> HashMap<String, String> {
    for _ in 0..secs * 10 {
        if let Some(s) = state_in(table, rid).await
            && matches!(
                s.get("status").map(String::as_str),
                Some("COMPLETED" | "FAILED" | "CANCELLED")
            )
        {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "request {rid} did not finish within {secs} s; state: {:?}",
        state_in(table, rid).await
    );
}

/// Creates a state table of its own (with the open-requests index), as devstack/up creates
/// the shared one: for tests whose sweepers must see only their own requests.
pub async fn new_state_table() -> String {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
        Projection, ProjectionType, ScalarAttributeType,
    };
    let name = testkit::unique("state");
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let key = |n: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .unwrap()
    };
    dynamodb()
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(
            ["request_id", "sk", "open_shard", "updated_at"]
                .map(attr)
                .to_vec(),
        ))
        .key_schema(key("request_id", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("open-requests")
                .key_schema(key("open_shard", KeyType::Hash))
                .key_schema(key("updated_at", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::KeysOnly)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    name
}

/// The `to` of every history event, oldest first.
pub async fn history(rid: &str) -> Vec<String> {
    history_in(&var("DEVSTACK_TABLE"), rid).await
}

/// The `to` of every history event in `table`, oldest first.
pub async fn history_in(table: &str, rid: &str) -> Vec<String> {
    history_details_in(table, rid)
        .await
        .into_iter()
        .map(|(to, _)| to)
        .collect()
}

/// (to, detail) of every history event, oldest first.
pub async fn history_details(rid: &str) -> Vec<(String, String)> {
    history_details_in(&var("DEVSTACK_TABLE"), rid).await
}

/// [`history_details`] in `table`.
pub async fn history_details_in(table: &str, rid: &str) -> Vec<(String, String)> {
    let out = dynamodb()
        .query()
        .table_name(table)
        .key_condition_expression("request_id = :id AND begins_with(sk, :p)")
        .expression_attribute_values(":id", AttributeValue::S(rid.into()))
        .expression_attribute_values(":p", AttributeValue::S("event#".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    out.items()
        .iter()
        .map(|i| {
            let get = |k: &str| {
                i.get(k)
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default()
            };
            (get("to"), get("detail"))
        })
        .collect()
}
