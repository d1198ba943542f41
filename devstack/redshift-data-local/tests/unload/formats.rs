//! What UNLOAD writes: CSV as PostgreSQL copies it, JSON lines, the text options, and
//! literals quoted inside the SELECT.

use serde_json::Value;
use testkit::{Emulator, gunzip, objects, unique};

use super::{bucket, emulator, finished, unload};

#[tokio::test]
async fn csv_output_is_byte_identical_to_postgres_copy() {
    let emu = emulator(&[]).await;
    let select = "select * from demo.orders where order_id <= 2000 order by order_id";
    let prefix = format!("{}/csv_", unique("csv"));
    finished(
        &emu,
        &unload(select, &prefix, "CSV HEADER PARALLEL OFF GZIP"),
    )
    .await;
    let objs = objects(&bucket(), &prefix).await;
    assert_eq!(objs.len(), 1);
    let ours = gunzip(&objs[0].1);

    let pg = testkit::pg().await;
    let copy = pg
        .copy_out(&format!(
            "COPY ({select}) TO STDOUT WITH (FORMAT csv, HEADER)"
        ))
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = futures_util::TryStreamExt::try_collect(copy).await.unwrap();
    let theirs = String::from_utf8(chunks.concat()).unwrap();
    assert_eq!(ours, theirs);
    for tricky in [
        "\"Acme, Inc. #",
        "O'Brien",
        "Café \"\"Zürich\"\"",
        "Line one\nLine two",
        "日本語",
        "back\\slash",
    ] {
        assert!(ours.contains(tricky), "{tricky:?} missing");
    }
}

#[tokio::test]
async fn quoted_literals_in_the_select_survive_unload_quoting() {
    let emu = emulator(&[]).await;
    let value = "it's a \\ back'slash \"quoted\"";
    let inner_literal = format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"));
    let prefix = format!("{}/q_", unique("quoted"));
    let sql = unload(
        &format!(
            "select {inner_literal} as v, sku from rsdataapi.product_detail where sku = 'FLOWER12'"
        ),
        &prefix,
        "CSV",
    );
    finished(&emu, &sql).await;
    let objs = objects(&bucket(), &prefix).await;
    let text: String = objs
        .iter()
        .map(|(_, b)| String::from_utf8(b.clone()).unwrap())
        .collect();
    assert_eq!(text, "\"it's a \\ back'slash \"\"quoted\"\"\",FLOWER12\n");
    assert_eq!(emu.sql_log(&emu_last_id(&emu).await).await, vec![sql]);
}

async fn emu_last_id(emu: &Emulator) -> String {
    let (_, body) = emu.admin("GET", "sql-log", "").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    v["entries"].as_array().unwrap().last().unwrap()["statement_id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn json_format_writes_one_typed_object_per_line() {
    let emu = emulator(&[]).await;
    let prefix = format!("{}/j_", unique("json"));
    let select = "select order_id, customer, amount, shipped, notes from demo.orders where order_id in (4, 5) order by order_id";
    finished(&emu, &unload(select, &prefix, "FORMAT JSON PARALLEL OFF")).await;
    let objs = objects(&bucket(), &prefix).await;
    let text = String::from_utf8(objs[0].1.clone()).unwrap();
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["order_id"], 4);
    assert_eq!(rows[0]["customer"], "Ünïcødé 日本語 🌸 #4");
    assert!(rows[0]["amount"].is_number());
    assert_eq!(rows[0]["notes"], "note 4");
    assert_eq!(rows[1]["notes"], Value::Null);
    assert_eq!(rows[1]["shipped"], "f", "Redshift unloads booleans as t/f");
}

#[tokio::test]
async fn text_options_delimiter_addquotes_escape_null() {
    let emu = emulator(&[]).await;
    let select = "select 'a|b' as x, null::text as y, 'q\"t' as z";
    let prefix = format!("{}/t_", unique("text"));
    finished(
        &emu,
        &unload(
            select,
            &prefix,
            "PARALLEL OFF ESCAPE ADDQUOTES NULL AS 'NULL'",
        ),
    )
    .await;
    let text = String::from_utf8(objects(&bucket(), &prefix).await[0].1.clone()).unwrap();
    assert_eq!(text, "\"a\\|b\"|NULL|\"q\\\"t\"\n");

    let prefix = format!("{}/d_", unique("text"));
    finished(
        &emu,
        &unload(select, &prefix, "CSV DELIMITER AS ';' PARALLEL OFF"),
    )
    .await;
    let text = String::from_utf8(objects(&bucket(), &prefix).await[0].1.clone()).unwrap();
    assert_eq!(text, "a|b;;\"q\"\"t\"\n");
}
