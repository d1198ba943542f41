//! The Data API operations, driven by the real `aws-sdk-redshiftdata` client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use aws_sdk_redshiftdata::error::ProvideErrorMetadata;
use aws_sdk_redshiftdata::types::{Field, SqlParameter, StatusString};
use testkit::{Emulator, var, wait_terminal};

mod faults;

/// A private emulator process built from this crate.
async fn emulator(extra: &[&str]) -> Emulator {
    Emulator::start(env!("CARGO_BIN_EXE_redshift-data-local"), extra).await
}

fn param(name: &str, value: &str) -> SqlParameter {
    SqlParameter::builder()
        .name(name)
        .value(value)
        .build()
        .unwrap()
}

/// Submits `sql` and returns the statement id.
async fn submit(client: &aws_sdk_redshiftdata::Client, sql: &str) -> String {
    let out = client
        .execute_statement()
        .cluster_identifier(var("DEVSTACK_CLUSTER_ID"))
        .database(var("DEVSTACK_DATABASE"))
        .sql(sql)
        .send()
        .await
        .unwrap();
    out.id().unwrap().to_string()
}

#[tokio::test]
async fn statement_lifecycle_reaches_finished_with_describe_fields() {
    let emu = emulator(&["--step-delay-ms", "100"]).await;
    let client = emu.client();
    let sql = "select sku, product_id from rsdataapi.product_detail order by sku";
    let out = client
        .execute_statement()
        .cluster_identifier(var("DEVSTACK_CLUSTER_ID"))
        .database(var("DEVSTACK_DATABASE"))
        .sql(sql)
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.cluster_identifier(),
        Some(var("DEVSTACK_CLUSTER_ID").as_str())
    );
    assert_eq!(out.database(), Some(var("DEVSTACK_DATABASE").as_str()));
    let id = out.id().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "Id is a UUID: {id}");
    let first = client.describe_statement().id(&id).send().await.unwrap();
    assert!(
        matches!(
            first.status(),
            Some(StatusString::Submitted | StatusString::Picked)
        ),
        "a fresh statement is not yet started: {:?}",
        first.status()
    );
    assert_eq!(first.duration(), -1);
    let done = wait_terminal(&client, &id).await;
    assert_eq!(done.status(), Some(&StatusString::Finished));
    assert!(
        done.duration() > 0,
        "Duration is nanoseconds since submission"
    );
    assert_eq!(done.result_rows(), 3);
    assert_eq!(done.has_result_set(), Some(true));
    assert_eq!(done.query_string(), Some(sql));
    assert!(done.redshift_pid() > 0);
    assert!(done.updated_at().unwrap().secs() >= done.created_at().unwrap().secs());
}

#[tokio::test]
async fn get_statement_result_types_fields_and_describes_columns() {
    let emu = emulator(&[]).await;
    let client = emu.client();
    let sql = "select 42::int4 as i, 9000000000::int8 as big, 1.5::float8 as f, 12.30::numeric(10,2) as n, \
               true as b, date '2024-02-29' as d, timestamp '2024-01-02 03:04:05' as ts, \
               'x'::varchar(20) as v, null::text as nothing, decode('666f6f', 'hex') as blob";
    let id = submit(&client, sql).await;
    let d = wait_terminal(&client, &id).await;
    assert_eq!(d.status(), Some(&StatusString::Finished), "{:?}", d.error());
    let r = client.get_statement_result().id(&id).send().await.unwrap();
    assert_eq!(r.total_num_rows(), 1);
    let row = &r.records()[0];
    assert_eq!(row[0], Field::LongValue(42));
    assert_eq!(row[1], Field::LongValue(9_000_000_000));
    assert_eq!(row[2], Field::DoubleValue(1.5));
    assert_eq!(row[3], Field::StringValue("12.30".into()));
    assert_eq!(row[4], Field::BooleanValue(true));
    assert_eq!(row[5], Field::StringValue("2024-02-29".into()));
    assert_eq!(row[6], Field::StringValue("2024-01-02 03:04:05".into()));
    assert_eq!(row[7], Field::StringValue("x".into()));
    assert_eq!(row[8], Field::IsNull(true));
    assert_eq!(row[9], Field::BlobValue(aws_smithy_blob(b"foo")));
    let cols = r.column_metadata();
    let names: Vec<_> = cols.iter().map(|c| c.name().unwrap()).collect();
    assert_eq!(
        names,
        ["i", "big", "f", "n", "b", "d", "ts", "v", "nothing", "blob"]
    );
    assert_eq!(cols[0].type_name(), Some("int4"));
    assert_eq!(cols[3].type_name(), Some("numeric"));
    assert_eq!((cols[3].precision(), cols[3].scale()), (10, 2));
    assert_eq!(cols[7].type_name(), Some("varchar"));
    assert_eq!(cols[7].length(), 20);
    assert_eq!(cols[0].nullable(), 1);
    assert!(cols[0].is_signed());
}

fn aws_smithy_blob(bytes: &[u8]) -> aws_sdk_redshiftdata::primitives::Blob {
    aws_sdk_redshiftdata::primitives::Blob::new(bytes)
}

#[tokio::test]
async fn get_statement_result_pages_with_next_token() {
    let emu = emulator(&["--page-rows", "100"]).await;
    let client = emu.client();
    let id = submit(
        &client,
        "select g from generate_series(1, 250) g order by g",
    )
    .await;
    wait_terminal(&client, &id).await;
    let mut values = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let r = client
            .get_statement_result()
            .id(&id)
            .set_next_token(token.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.total_num_rows(), 250);
        pages += 1;
        values.extend(r.records().iter().map(|row| match &row[0] {
            Field::LongValue(v) => *v,
            other => panic!("{other:?}"),
        }));
        token = r.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(values, (1..=250).collect::<Vec<i64>>());
}

#[tokio::test]
async fn client_token_replay_returns_the_same_statement() {
    let emu = emulator(&[]).await;
    let client = emu.client();
    let token = testkit::unique("token");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let out = client
            .execute_statement()
            .cluster_identifier(var("DEVSTACK_CLUSTER_ID"))
            .database(var("DEVSTACK_DATABASE"))
            .client_token(&token)
            .sql("select 1")
            .send()
            .await
            .unwrap();
        ids.push(out.id().unwrap().to_string());
    }
    assert_eq!(ids[0], ids[1]);
    assert_eq!(emu.sql_log(&ids[0]).await, vec!["select 1".to_string()]);
    let (_, body) = emu.admin("GET", "stats", "").await;
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        stats["total"], 1,
        "the replay did not start a second statement"
    );
}

#[tokio::test]
async fn named_parameters_bind_as_values_and_unused_ones_are_rejected() {
    let emu = emulator(&[]).await;
    let client = emu.client();
    let tricky = "O'Brien \\ \"x\" ; -- $$";
    let out = client
        .execute_statement()
        .cluster_identifier(var("DEVSTACK_CLUSTER_ID"))
        .database(var("DEVSTACK_DATABASE"))
        .sql("select :v::text as v, :n::int + 1 as n, ':v' as literal")
        .parameters(param("v", tricky))
        .parameters(param("n", "41"))
        .send()
        .await
        .unwrap();
    let id = out.id().unwrap().to_string();
    let d = wait_terminal(&client, &id).await;
    assert_eq!(d.status(), Some(&StatusString::Finished), "{:?}", d.error());
    assert_eq!(d.query_parameters().len(), 2);
    let r = client.get_statement_result().id(&id).send().await.unwrap();
    assert_eq!(r.records()[0][0], Field::StringValue(tricky.into()));
    assert_eq!(r.records()[0][1], Field::LongValue(42));
    assert_eq!(r.records()[0][2], Field::StringValue(":v".into()));

    let err = client
        .execute_statement()
        .cluster_identifier(var("DEVSTACK_CLUSTER_ID"))
        .database(var("DEVSTACK_DATABASE"))
        .sql("unload ('select * from rsdataapi.product_detail where sku = :sku') to 's3://exports-upload/x/' iam_role default")
        .parameters(param("sku", "FLOWER12"))
        .send()
        .await
        .unwrap_err();
    let service = err.into_service_error();
    assert!(service.is_validation_exception(), "{service:?}");
    assert_eq!(
        service.message(),
        Some("Parameters list contains unused parameters. Unused parameters: [sku]")
    );
}

#[tokio::test]
async fn validation_and_not_found_errors_have_the_right_types() {
    let emu = emulator(&[]).await;
    let client = emu.client_without_retries();
    let err = client
        .execute_statement()
        .database("dev")
        .sql("select 1")
        .send()
        .await
        .unwrap_err();
    let raw_status = err.raw_response().map(|r| r.status().as_u16());
    let service = err.into_service_error();
    assert!(service.is_validation_exception(), "{service:?}");
    assert_eq!(raw_status, Some(400));
    assert!(
        service
            .message()
            .unwrap()
            .contains("ClusterIdentifier or WorkgroupName")
    );

    let err = client
        .describe_statement()
        .id("00000000-0000-0000-0000-000000000000")
        .send()
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_resource_not_found_exception());

    let failed = emu.run("select * from no_such_table").await;
    assert_eq!(failed.status(), Some(&StatusString::Failed));
    assert!(
        failed
            .error()
            .unwrap()
            .contains("relation \"no_such_table\" does not exist"),
        "{:?}",
        failed.error()
    );
    let err = client
        .get_statement_result()
        .id(failed.id())
        .send()
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_validation_exception());

    let two = emu.run("select 1; select 2").await;
    assert_eq!(
        two.status(),
        Some(&StatusString::Failed),
        "one statement per call, as the Data API"
    );
}

#[tokio::test]
async fn cancel_stops_a_running_query_in_postgres() {
    let emu = emulator(&[]).await;
    let client = emu.client();
    let marker = testkit::unique("sleep");
    let sql = format!("select pg_sleep(60) /* {marker} */");
    let id = submit(&client, &sql).await;
    // Wait until PostgreSQL is really running it.
    let pg = testkit::pg().await;
    let running = format!(
        "select count(*) from pg_stat_activity where query = '{}'",
        sql.replace('\'', "''")
    );
    let mut seen = false;
    for _ in 0..200 {
        let n: i64 = pg.query_one(&running, &[]).await.unwrap().get(0);
        if n == 1 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "the query never reached PostgreSQL");
    let cancelled = client.cancel_statement().id(&id).send().await.unwrap();
    assert_eq!(cancelled.status(), Some(true));
    let d = wait_terminal(&client, &id).await;
    assert_eq!(d.status(), Some(&StatusString::Aborted));
    let mut gone = false;
    for _ in 0..100 {
        let n: i64 = pg.query_one(&running, &[]).await.unwrap().get(0);
        if n == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gone,
        "the query kept running in PostgreSQL after CancelStatement"
    );

    let finished = emu.run("select 1").await;
    let err = client
        .cancel_statement()
        .id(finished.id())
        .send()
        .await
        .unwrap_err();
    let service = err.into_service_error();
    assert!(service.is_validation_exception());
    assert!(
        service
            .message()
            .unwrap()
            .contains("already in FINISHED state"),
        "{service:?}"
    );
}

#[tokio::test]
async fn list_statements_filters_by_name_and_status_and_pages() {
    let emu = emulator(&[]).await;
    let client = emu.client();
    let name = testkit::unique("list");
    let mut ids = Vec::new();
    for sql in ["select 1", "select 2", "select * from missing_table"] {
        let out = client
            .execute_statement()
            .cluster_identifier(var("DEVSTACK_CLUSTER_ID"))
            .database(var("DEVSTACK_DATABASE"))
            .statement_name(format!("{name}-{}", ids.len()))
            .sql(sql)
            .send()
            .await
            .unwrap();
        let id = out.id().unwrap().to_string();
        wait_terminal(&client, &id).await;
        ids.push(id);
    }
    let finished = client
        .list_statements()
        .statement_name(&name)
        .send()
        .await
        .unwrap();
    let got: Vec<_> = finished
        .statements()
        .iter()
        .map(|s| s.id().to_string())
        .collect();
    assert_eq!(
        got,
        vec![ids[1].clone(), ids[0].clone()],
        "default lists FINISHED, newest first"
    );

    let all = client
        .list_statements()
        .statement_name(&name)
        .status(aws_sdk_redshiftdata::types::StatusString::All)
        .max_results(2)
        .send()
        .await
        .unwrap();
    assert_eq!(all.statements().len(), 2);
    let rest = client
        .list_statements()
        .statement_name(&name)
        .status(aws_sdk_redshiftdata::types::StatusString::All)
        .max_results(2)
        .next_token(all.next_token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(rest.statements().len(), 1);
    assert_eq!(rest.statements()[0].id(), ids[0]);
    assert!(rest.next_token().is_none());
}
