"""The benchmark behind scripts/bench. One run, one set of data: a release-built worker (with a
private release-built emulator) exports the `hashes` template (hard-to-compress rows) through
the devstack in both layouts; the gzip parts UNLOAD wrote are kept and every other figure is
measured on exactly those parts: the archive engine alone (benches/engine.rs: inflate-only,
`single` and `parts` on one core and on all cores), Python's zipfile and Node's archiver at
DEFLATE level 6 (what the AWS sample's Lambda does), and the S3 reads and writes of moto itself;
during each archive stage, the CPU seconds of the worker and of moto, which share the machine's
cores and together bound the end-to-end figure here. Before the large exports, on the fresh
local stack: 1,000 one-row exports with 8 job slots (exports/s, daemon CPU and AWS calls per
export, time beyond the query), the idle RSS and the time from start to ready. Every way of
archiving the data runs REPEATS times (3), interleaved, and its fastest run counts. Prints the
tables the README shows. Nothing here is asserted."""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = int(sys.argv[1])
SMALL = int(sys.argv[2])
BENCH = os.path.join(ROOT, "target", "bench")
# `dev` (scripts/test's small run) checks that every step works, with the test suite's builds;
# its figures mean nothing.
PROFILE = os.environ.get("BENCH_PROFILE", "release")
# Every way of archiving the data (the engine's, the baselines, each layout end to end) runs this
# many times and its fastest run counts: the machine's slow moments then fall on none of them
# in particular. The small run checks each step once.
REPEATS = int(os.environ.get("BENCH_REPEATS", "3" if PROFILE == "release" else "1"))
BIN = os.path.join(ROOT, "target", "release" if PROFILE == "release" else "debug")
env = dict(os.environ)
sqs, s3, ddb = boto3.client("sqs"), boto3.client("s3"), boto3.client("dynamodb")
upload, archive, table = env["DEVSTACK_UPLOAD_BUCKET"], env["DEVSTACK_ARCHIVE_BUCKET"], env["DEVSTACK_TABLE"]


GLIBC_TUNABLES = "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=1048576"


def start_emulator():
    p = subprocess.Popen(
        [f"{BIN}/redshift-data-local", "--listen", "127.0.0.1:0", "--pg", env["DEVSTACK_PG_CONN"],
         "--s3-endpoint", env["AWS_ENDPOINT_URL"]],
        stdout=subprocess.PIPE, text=True, env={**env, "RDL_LOG": "warn"})
    return p, p.stdout.readline().rsplit(" ", 1)[1].strip()


def start_worker(queue, emulator_url, log_path):
    """The worker and its admin address; also how long it took to answer /readyz."""
    worker_env = {**env,
                  "EXPORT_WORKER__QUEUE__URL": queue,
                  "EXPORT_WORKER__AWS__ENDPOINTS__REDSHIFT_DATA": emulator_url,
                  "EXPORT_WORKER__REDSHIFT__MAX_FILE_SIZE_MB": "64",
                  # config/local.toml's 5 minutes is too short to unload several GB here.
                  "EXPORT_WORKER__REDSHIFT__QUERY_TIMEOUT_SECS": "3600",
                  "EXPORT_WORKER__UPLOAD__DELETE_AFTER_ARCHIVE": "false",
                  "EXPORT_WORKER__WORKER__MAX_CONCURRENT_JOBS": "8",
                  "EXPORT_WORKER__SWEEPER__ENABLED": "false",
                  "EXPORT_WORKER__EMAIL__SMTP__PORT": env["DEVSTACK_SMTP_PORT"],
                  "EXPORT_WORKER__ADMIN__LISTEN": "127.0.0.1:0",
                  "EXPORT_WORKER__LOGGING__FILTER": "warn,redshift_export_worker::admin=info",
                  # As every deployment runs it (deploy/: unit, image, Deployment).
                  "GLIBC_TUNABLES": GLIBC_TUNABLES,
                  # BENCH_EXPORT_WORKER__… variables override the worker's settings for a run.
                  **{k[len("BENCH_"):]: v for k, v in env.items() if k.startswith("BENCH_EXPORT_WORKER__")}}
    log = open(log_path, "w")
    started = time.monotonic()
    worker = subprocess.Popen([f"{BIN}/redshift-export-worker", "run", "--config",
                               f"{ROOT}/config/local.toml"], env=worker_env, stdout=log, stderr=log)
    admin = None
    while time.monotonic() - started < 30:
        if admin is None:
            with open(log_path) as f:
                text = re.sub(r"\x1b\[[0-9;]*m", "", f.read())
                m = re.search(r'admin listener started.*?(?:"addr":"([^"]+)"|addr=(\S+))', text)
                admin = m and (m.group(1) or m.group(2))
        if admin:
            try:
                if urllib.request.urlopen(f"http://{admin}/readyz", timeout=1).status == 200:
                    return worker, admin, time.monotonic() - started
            except OSError:
                pass
        time.sleep(0.002)
    raise SystemExit("the worker did not become ready")


def metric(admin, prefix):
    text = urllib.request.urlopen(f"http://{admin}/metrics", timeout=10).read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(prefix))


def calls_by_operation(admin):
    text = urllib.request.urlopen(f"http://{admin}/metrics", timeout=10).read().decode()
    calls = {}
    for m in re.finditer(r'^redshift_export_aws_requests_total\{operation="(\w+)",[^}]*\} (\S+)$', text, re.M):
        calls[m.group(1)] = calls.get(m.group(1), 0) + float(m.group(2))
    return calls


def proc(pid, field):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(field + r":\s+(\d+) kB", f.read()).group(1)) / 1024


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def state(rid):
    item = ddb.get_item(TableName=table, Key={"request_id": {"S": rid}, "sk": {"S": "state"}},
                        ConsistentRead=True).get("Item")
    return {k: list(v.values())[0] for k, v in (item or {}).items()}


def history(rid):
    items = ddb.query(TableName=table, KeyConditionExpression="request_id = :r AND begins_with(sk, :p)",
                      ExpressionAttributeValues={":r": {"S": rid}, ":p": {"S": "event#"}})["Items"]
    return {i["to"]["S"]: datetime.fromisoformat(i["at"]["S"].replace("Z", "+00:00")) for i in items}


def large_exports(queue, worker):
    """Each layout's archive stage, exported REPEATS times (the layouts interleaved), the fastest
    kept: seconds from its history, and the CPU seconds the worker and moto spent while it ran
    (sampled when the stage is first seen to start and to end; a stage shorter than the 50 ms
    poll may be seen only ended, and then samples nothing). Each export's archive is deleted, and
    its unloaded parts but the first `single` export's, which the other measures read; so moto
    holds no more at the last export than at the first."""
    with open(os.path.join(ROOT, "target", "devstack", "run", "moto.pid")) as f:
        moto = int(f.read())
    results, kept = {}, None
    for layout in [layout for _ in range(REPEATS) for layout in ("single", "parts")]:
        rid = f"bench-{layout}-{uuid.uuid4().hex[:8]}"
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(
            {"version": 1, "request_id": rid, "query": "hashes", "params": {"rows": ROWS}, "layout": layout}))
        print(f"bench: {layout}: exporting {ROWS:,} rows", flush=True)
        seen = {}
        while (status := state(rid).get("status")) not in ("COMPLETED", "FAILED"):
            seen.setdefault(status, (time.monotonic(), cpu_seconds(worker.pid), cpu_seconds(moto)))
            time.sleep(0.05)
        seen.setdefault(status, (time.monotonic(), cpu_seconds(worker.pid), cpu_seconds(moto)))
        assert status == "COMPLETED", state(rid)
        h = history(rid)
        end = seen.get("NOTIFYING", seen[status])
        start = seen.get("ARCHIVING", end)
        run = {"seconds": (h["NOTIFYING"] - h["ARCHIVING"]).total_seconds(),
               "worker_cpu": end[1] - start[1], "moto_cpu": end[2] - start[2], "sampled": end[0] - start[0]}
        print(f"bench: {layout}: archive stage {run['seconds']:.2f} s", flush=True)
        if layout not in results or run["seconds"] < results[layout]["seconds"]:
            results[layout] = run
        s3.delete_object(Bucket=archive, Key=state(rid)["archive_key"])
        if kept is None and layout == "single":
            kept = rid
        else:
            delete_unloaded(rid)
    return results, kept


def keep_parts(rid):
    """Downloads the parts UNLOAD wrote (timed: moto's S3 read rate) and deletes them."""
    prefix = f"unload/{rid}/1/"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=upload, Prefix=prefix)["Contents"] if o["Key"].endswith(".gz"))
    parts = os.path.join(BENCH, "parts")
    os.makedirs(parts, exist_ok=True)
    for f in os.listdir(parts):
        os.remove(os.path.join(parts, f))
    started, size = time.monotonic(), 0
    for key in keys:
        body = s3.get_object(Bucket=upload, Key=key)["Body"].read()
        size += len(body)
        with open(os.path.join(parts, key.rsplit("/", 1)[1]), "wb") as f:
            f.write(body)
    get_rate = size / (time.monotonic() - started) / 1e6
    started = time.monotonic()
    s3.upload_file(os.path.join(parts, os.listdir(parts)[0]), archive, "bench/put-rate")
    put_rate = os.path.getsize(os.path.join(parts, os.listdir(parts)[0])) / (time.monotonic() - started) / 1e6
    s3.delete_object(Bucket=archive, Key="bench/put-rate")
    return parts, size, get_rate, put_rate


def delete_unloaded(rid):
    for o in s3.list_objects_v2(Bucket=upload, Prefix=f"unload/{rid}/").get("Contents", []):
        s3.delete_object(Bucket=upload, Key=o["Key"])


def timed(cmd, **kw):
    """Runs `cmd`; its wall seconds, CPU seconds and peak RSS (MiB) from wait4."""
    started = time.monotonic()
    p = subprocess.Popen(cmd, **kw)
    _, status, usage = os.wait4(p.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, cmd
    return time.monotonic() - started, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def fastest(*baselines):
    """Runs each baseline REPEATS times, interleaved, as the engine runs its ways; the fastest
    run of each."""
    runs = [[] for _ in baselines]
    for _ in range(REPEATS):
        for baseline, kept in zip(baselines, runs):
            kept.append(baseline())
    return [min(kept) for kept in runs]


def python_zipfile(parts):
    code = ("import gzip, os, sys, zipfile\n"
            "d = sys.argv[1]\n"
            "with zipfile.ZipFile(sys.argv[2], 'w', compression=zipfile.ZIP_DEFLATED, compresslevel=6) as z:\n"
            "    with z.open('export.csv', 'w', force_zip64=True) as e:\n"
            "        for f in sorted(os.listdir(d)):\n"
            "            with gzip.open(os.path.join(d, f)) as p:\n"
            "                while c := p.read(1 << 20):\n"
            "                    e.write(c)\n")
    with tempfile.TemporaryDirectory(dir=BENCH) as t:
        return timed([sys.executable, "-c", code, parts, os.path.join(t, "python.zip")])


def node_archiver(parts):
    node = os.path.join(BENCH, "node")
    if not os.path.exists(os.path.join(node, "node_modules", "archiver")):
        print("bench: installing Node's archiver", flush=True)
        os.makedirs(node, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--prefix", node, "archiver@7"], check=True)
    with tempfile.TemporaryDirectory(dir=BENCH) as t:
        return timed(["node", os.path.join(ROOT, "scripts", "bench_archiver.js"), parts, os.path.join(t, "node.zip")],
                     env={**env, "NODE_PATH": os.path.join(node, "node_modules")})


def engine(parts):
    run = "bench" if PROFILE == "release" else "test"
    out = subprocess.run(["cargo", run, "--quiet", "--bench", "engine", "--", parts], check=True,
                         capture_output=True, text=True, cwd=ROOT,
                         env={**env, "ENGINE_REPEATS": str(REPEATS)}).stdout
    return json.loads(out.strip().splitlines()[-1])


def small_exports(queue, worker, admin):
    print(f"bench: {SMALL:,} one-row exports, 8 slots", flush=True)
    done = lambda: metric(admin, 'redshift_export_jobs_total{error_code="",outcome="completed"}')
    before_done, before_calls, before_cpu = done(), calls_by_operation(admin), cpu_seconds(worker.pid)
    rids = [f"bench-small-{uuid.uuid4().hex[:12]}" for _ in range(SMALL)]
    started = time.monotonic()
    for i in range(0, SMALL, 10):
        sqs.send_message_batch(QueueUrl=queue, Entries=[
            {"Id": str(j), "MessageBody": json.dumps({"version": 1, "request_id": rid, "query": "product_detail_by_sku",
                                                      "params": {"sku": "FLOWER12"}})}
            for j, rid in enumerate(rids[i:i + 10])])
    # Every scrape of /metrics is daemon CPU too: asked twice a second, about 1 % of it.
    while done() - before_done < SMALL:
        time.sleep(0.5)
    wall = time.monotonic() - started
    cpu = cpu_seconds(worker.pid) - before_cpu
    after_calls = calls_by_operation(admin)
    by_operation = {op: (n - before_calls.get(op, 0)) / SMALL for op, n in sorted(after_calls.items())}
    calls = sum(by_operation.values()) * SMALL
    # The histories of a sample (moto answers a Query in tens of milliseconds at best).
    sample = rids[:: max(1, SMALL // 200)]
    with ThreadPoolExecutor(4) as pool:
        beyond = sorted(pool.map(lambda r: (lambda h: (h["COMPLETED"] - h["ARCHIVING"]).total_seconds())(history(r)), sample))
    return {"per_second": SMALL / wall, "cpu_ms": cpu * 1000 / SMALL, "calls": calls / SMALL,
            "by_operation": {op: n for op, n in by_operation.items() if n > 0},
            "p50_ms": statistics.median(beyond) * 1000, "p99_ms": beyond[int(len(beyond) * 0.99) - 1] * 1000}


def main():
    os.makedirs(BENCH, exist_ok=True)
    emulator, emulator_url = start_emulator()
    queue = sqs.create_queue(QueueName=f"bench-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    worker, admin, ready = start_worker(queue, emulator_url, os.path.join(BENCH, "worker.log"))
    time.sleep(2)
    idle_rss, idle_anon = proc(worker.pid, "VmRSS"), proc(worker.pid, "RssAnon")
    try:
        # One-row exports first, on the fresh local stack: moto answers more slowly as it fills,
        # which would charge the one-row figure for the large exports' records and objects.
        small = small_exports(queue, worker, admin)
        e2e, kept = large_exports(queue, worker)
        peak_rss = proc(worker.pid, "VmHWM")
    finally:
        worker.terminate()
        worker.wait()
        emulator.terminate()
    parts, compressed, get_rate, put_rate = keep_parts(kept)
    delete_unloaded(kept)
    print("bench: the engine on the same parts", flush=True)
    eng = engine(parts)
    print("bench: Python zipfile and Node archiver on the same parts", flush=True)
    py, nd = fastest(lambda: python_zipfile(parts), lambda: node_archiver(parts))

    mb = eng["csv_bytes"] / 1e6
    floor = eng["runs"][0]["seconds"]
    ratio = compressed / eng["csv_bytes"]
    print()
    print(f"{ROWS:,} rows, {mb:,.0f} MB of CSV in {eng['parts']} gzip parts ({compressed / 1e6:,.0f} MB), "
          f"{eng['cores']} cores")
    print()
    print("| | MB/s of CSV | CPU s | vs inflate only | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for r in eng["runs"]:
        print(f"| engine: {r['name']} | {mb / r['seconds']:.0f} | {r['cpu']:.2f} | {floor / r['seconds']:.2f}× | |")
    print(f"| Python zipfile, level 6 | {mb / py[0]:.0f} | {py[1]:.2f} | {floor / py[0]:.2f}× | {py[2]:.0f} |")
    print(f"| Node archiver, level 6 | {mb / nd[0]:.0f} | {nd[1]:.2f} | {floor / nd[0]:.2f}× | {nd[2]:.0f} |")
    print()
    by_name = {r["name"]: r["seconds"] for r in eng["runs"]}
    print("| end to end through the devstack (archive stage) | MB/s of CSV | vs engine, all cores | vs Python | vs Node "
          "| CPU s: worker / moto | cores busy |")
    print("|---|---|---|---|---|---|---|")
    for layout in ("single", "parts"):
        r = e2e[layout]
        s = r["seconds"]
        engine_s = by_name[f"`{layout}` pipeline, all cores"]
        busy = f'{(r["worker_cpu"] + r["moto_cpu"]) / r["sampled"]:.2f}' if r["sampled"] > 0 else "n/a"
        print(f"| worker, `{layout}` | {mb / s:.0f} | {engine_s / s:.2f}× | {py[0] / s:.1f}× | {nd[0] / s:.1f}× "
              f"| {r['worker_cpu']:.2f} / {r['moto_cpu']:.2f} | {busy} of {eng['cores']} |")
    print(f"| moto's S3 alone: GET of the parts / PUT, as MB/s of CSV | {get_rate / ratio:.0f} / {put_rate / ratio:.0f} "
          "| | | | | |")
    print()
    print(f"worker peak RSS over both exports: {peak_rss:.1f} MiB (VmHWM); idle RSS {idle_rss:.1f} MiB; "
          f"start to ready {ready * 1000:.0f} ms")
    print()
    print(f"| {SMALL:,} one-row exports, 8 slots | exports/s | daemon CPU ms per export | AWS calls per export | "
          "beyond the query p50 / p99 ms (200 sampled) |")
    print("|---|---|---|---|---|")
    print(f"| worker | {small['per_second']:.1f} | {small['cpu_ms']:.1f} | {small['calls']:.1f} | "
          f"{small['p50_ms']:.0f} / {small['p99_ms']:.0f} |")
    print()
    print("AWS calls per one-row export: " + ", ".join(f"{op} {n:.2f}" for op, n in small["by_operation"].items()))
    print(f"worker memory when idle: {idle_anon:.1f} MiB anonymous, {idle_rss - idle_anon:.1f} MiB of mapped files "
          "(the binary's code, shared and reclaimable)")


if __name__ == "__main__":
    main()
