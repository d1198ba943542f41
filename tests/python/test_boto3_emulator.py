"""The devstack seen by a plain boto3 client: only boto3 and the variables of
target/devstack/env, no project code. Runs an UNLOAD through redshift-data-local, polls it to
FINISHED and reads the manifest and parts back from moto's S3."""

import csv
import gzip
import io
import json
import os
import time
import uuid

import boto3
import pytest

CLUSTER = os.environ["DEVSTACK_CLUSTER_ID"]
DATABASE = os.environ["DEVSTACK_DATABASE"]
DB_USER = os.environ["DEVSTACK_DB_USER"]
BUCKET = os.environ["DEVSTACK_UPLOAD_BUCKET"]

rsd = boto3.client("redshift-data")
s3 = boto3.client("s3")


def run(sql):
    statement_id = rsd.execute_statement(ClusterIdentifier=CLUSTER, Database=DATABASE, DbUser=DB_USER, Sql=sql)["Id"]
    for _ in range(600):
        d = rsd.describe_statement(Id=statement_id)
        if d["Status"] in ("FINISHED", "FAILED", "ABORTED"):
            return d
        time.sleep(0.1)
    raise AssertionError(f"{statement_id} did not finish")


def unload(select, options):
    prefix = f"boto3-{uuid.uuid4().hex}/out_"
    quoted = select.replace("'", "''")
    d = run(f"UNLOAD ('{quoted}') TO 's3://{BUCKET}/{prefix}' IAM_ROLE default {options}")
    assert d["Status"] == "FINISHED", d.get("Error")
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return prefix, {o["Key"][len(prefix):]: o["Size"] for o in listing}, d


def body(key):
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def test_unload_gzip_csv_with_verbose_manifest():
    prefix, names, d = unload("select * from rsdataapi.product_detail", "FORMAT CSV GZIP MANIFEST VERBOSE")
    assert d["ResultRows"] == 3
    assert sorted(names) == ["0000_part_00.gz", "0001_part_00.gz", "0002_part_00.gz", "manifest"]
    manifest = json.loads(body(prefix + "manifest"))
    rows = []
    for entry in manifest["entries"]:
        key = entry["url"].removeprefix(f"s3://{BUCKET}/")
        data = body(key)
        assert entry["meta"]["content_length"] == len(data)
        rows += list(csv.reader(io.StringIO(gzip.decompress(data).decode())))
    assert sorted(r[0] for r in rows) == ["FLOWER12", "FLOWER13", "FLOWER14"]
    assert manifest["meta"]["record_count"] == 3
    assert [e["name"] for e in manifest["schema"]["elements"]] == ["sku", "product_id", "product_name", "product_description"]


def test_unload_parallel_off_writes_000():
    prefix, names, _ = unload("select * from rsdataapi.product_detail order by sku", "PARALLEL OFF")
    assert list(names) == ["000"]
    lines = body(prefix + "000").decode().splitlines()
    assert lines[0] == "FLOWER12|12345|Flowers - Rose|Flowers-Rose"


def test_unload_header_in_every_file():
    prefix, names, _ = unload("select sku, product_id from rsdataapi.product_detail", "CSV HEADER")
    assert len(names) == 3
    for name in names:
        assert body(prefix + name).decode().splitlines()[0] == "sku,product_id"


def test_unload_with_a_quoted_literal():
    prefix, names, _ = unload(
        "select sku, 'it''s' as note from rsdataapi.product_detail where product_name = 'Flowers - Jasmine'",
        "CSV PARALLEL OFF",
    )
    assert body(prefix + "000").decode() == "FLOWER13,it's\n"


def test_unload_zero_rows_writes_no_data_files():
    prefix, names, d = unload("select * from rsdataapi.product_detail where sku = 'NONE'", "CSV GZIP MANIFEST")
    assert d["ResultRows"] == 0
    assert list(names) == ["manifest"]
    assert json.loads(body(prefix + "manifest"))["entries"] == []


def test_parameters_inside_unload_are_unused():
    with pytest.raises(rsd.exceptions.ValidationException, match=r"Unused parameters: \[sku\]"):
        rsd.execute_statement(
            ClusterIdentifier=CLUSTER,
            Database=DATABASE,
            Sql=f"UNLOAD ('select * from rsdataapi.product_detail where sku = :sku') TO 's3://{BUCKET}/x/' IAM_ROLE default",
            Parameters=[{"name": "sku", "value": "FLOWER12"}],
        )


def test_failed_statement_reports_its_error():
    d = run("select * from rsdataapi.no_such_table")
    assert d["Status"] == "FAILED"
    assert 'relation "rsdataapi.no_such_table" does not exist' in d["Error"]
