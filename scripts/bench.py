"""The benchmark behind scripts/bench. Runs a private release-built emulator and worker
against the devstack, exports the `hashes` template twice (layouts `single` and `parts`),
and times the archive stage from the worker's own DynamoDB history. The baseline re-zips the
same unloaded gzip parts with Python's zipfile (DEFLATE level 6, what a straightforward
implementation does), reading them from the same S3."""

import gzip
import json
import os
import re
import subprocess
import sys
import time
import uuid
import zipfile
from datetime import datetime

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = int(sys.argv[1])
env = dict(os.environ)
sqs, s3, ddb = boto3.client("sqs"), boto3.client("s3"), boto3.client("dynamodb")
upload, archive, table = env["DEVSTACK_UPLOAD_BUCKET"], env["DEVSTACK_ARCHIVE_BUCKET"], env["DEVSTACK_TABLE"]


def start_emulator():
    p = subprocess.Popen(
        [f"{ROOT}/target/release/redshift-data-local", "--listen", "127.0.0.1:0", "--pg", env["DEVSTACK_PG_CONN"],
         "--s3-endpoint", env["AWS_ENDPOINT_URL"]],
        stdout=subprocess.PIPE, text=True, env={**env, "RDL_LOG": "warn"})
    line = p.stdout.readline()
    return p, line.rsplit(" ", 1)[1].strip()


def state(rid):
    item = ddb.get_item(TableName=table, Key={"request_id": {"S": rid}, "sk": {"S": "state"}}, ConsistentRead=True).get("Item")
    return {k: list(v.values())[0] for k, v in (item or {}).items()}


def history(rid):
    items = ddb.query(TableName=table, KeyConditionExpression="request_id = :r AND begins_with(sk, :p)",
                      ExpressionAttributeValues={":r": {"S": rid}, ":p": {"S": "event#"}})["Items"]
    return {i["to"]["S"]: datetime.fromisoformat(i["at"]["S"].replace("Z", "+00:00")) for i in items}


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) / 1024


def main():
    emulator, emulator_url = start_emulator()
    queue = sqs.create_queue(QueueName=f"bench-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    worker_env = {**env,
                  "EXPORT_WORKER__QUEUE__URL": queue,
                  "EXPORT_WORKER__AWS__ENDPOINTS__REDSHIFT_DATA": emulator_url,
                  "EXPORT_WORKER__REDSHIFT__MAX_FILE_SIZE_MB": "256",
                  "EXPORT_WORKER__UPLOAD__DELETE_AFTER_ARCHIVE": "false",
                  "EXPORT_WORKER__EMAIL__SMTP__PORT": env["DEVSTACK_SMTP_PORT"],
                  "EXPORT_WORKER__LOGGING__FORMAT": "json",
                  "EXPORT_WORKER_LOG": "warn"}
    worker = subprocess.Popen([f"{ROOT}/target/release/redshift-export-worker", "run", "--config", f"{ROOT}/config/local.toml"],
                              env=worker_env)
    results = {}
    try:
        for layout in ("single", "parts"):
            rid = f"bench-{layout}-{uuid.uuid4().hex[:8]}"
            sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(
                {"version": 1, "request_id": rid, "query": "hashes", "params": {"rows": ROWS}, "layout": layout}))
            print(f"bench: {layout}: exporting {ROWS:,} rows", flush=True)
            while state(rid).get("status") not in ("COMPLETED", "FAILED"):
                time.sleep(1)
            st = state(rid)
            assert st["status"] == "COMPLETED", st
            h = history(rid)
            seconds = (h["NOTIFYING"] - h["ARCHIVING"]).total_seconds()
            results[layout] = {"rid": rid, "seconds": seconds, "archive_bytes": int(st["archive_bytes"]), "rows": int(st["rows"])}
        rss = peak_rss_mib(worker.pid)
    finally:
        worker.terminate()
        worker.wait()
        emulator.terminate()

    # The uncompressed size and the baseline, from the parts of the `single` export.
    prefix = f"unload/{results['single']['rid']}/1/"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=upload, Prefix=prefix)["Contents"] if o["Key"].endswith(".gz")]
    print(f"bench: baseline: Python zipfile re-zipping {len(keys)} parts", flush=True)
    started = time.monotonic()
    csv_bytes = 0
    out = os.path.join(ROOT, "target", "bench-baseline.zip")
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        with z.open("export.csv", "w", force_zip64=True) as entry:
            for key in keys:
                body = s3.get_object(Bucket=upload, Key=key)["Body"]
                with gzip.GzipFile(fileobj=body) as part:
                    while chunk := part.read(1 << 20):
                        csv_bytes += len(chunk)
                        entry.write(chunk)
    baseline = time.monotonic() - started
    os.remove(out)
    for layout in ("single", "parts"):
        p = f"unload/{results[layout]['rid']}/1/"
        for o in s3.list_objects_v2(Bucket=upload, Prefix=p).get("Contents", []):
            s3.delete_object(Bucket=upload, Key=o["Key"])

    mb = csv_bytes / 1e6
    print()
    print(f"{ROWS:,} rows, {csv_bytes / 2**30:.2f} GiB of CSV ({mb:,.0f} MB), {len(keys)} gzip parts")
    print()
    print("| archive stage | seconds | MB/s of CSV | vs baseline |")
    print("|---|---|---|---|")
    print(f"| Python zipfile, level 6 (baseline) | {baseline:.1f} | {mb / baseline:.0f} | 1.0× |")
    for layout, name in (("single", "worker, `single` (recompress, level 6)"), ("parts", "worker, `parts` (verified pass-through)")):
        r = results[layout]
        print(f"| {name} | {r['seconds']:.1f} | {mb / r['seconds']:.0f} | {baseline / r['seconds']:.1f}× |")
    print()
    print(f"worker peak RSS over both exports: {rss:.1f} MiB (VmHWM)")


if __name__ == "__main__":
    main()
