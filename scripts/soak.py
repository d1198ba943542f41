"""The soak behind scripts/soak: one release-built worker (with a private release-built
emulator) under steady load against the devstack for MINUTES, sampled every minute: resident
memory, open file descriptors and the runtime's alive tasks (the worker's own gauge), with the
exports completed so far. Leaks show as growth after the warm-up; the report says how much."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINUTES = int(sys.argv[1])
PER_SECOND = float(sys.argv[2])
env = dict(os.environ)
sqs = boto3.client("sqs")


def admin_address(log_path):
    """The admin address the worker logged (it binds port 0: no race for a port)."""
    for _ in range(100):
        with open(log_path) as f:
            for line in f:
                line = re.sub(r"\x1b\[[0-9;]*m", "", line)
                m = re.search(r"admin listener started.*addr=(\S+)", line)
                if m:
                    return m.group(1)
        time.sleep(0.1)
    raise SystemExit("the worker did not log its admin address")


def start_emulator():
    p = subprocess.Popen(
        [f"{ROOT}/target/release/redshift-data-local", "--listen", "127.0.0.1:0", "--pg", env["DEVSTACK_PG_CONN"],
         "--s3-endpoint", env["AWS_ENDPOINT_URL"]],
        stdout=subprocess.PIPE, text=True, env={**env, "RDL_LOG": "warn"})
    return p, p.stdout.readline().rsplit(" ", 1)[1].strip()


def metric(admin, name):
    text = urllib.request.urlopen(f"http://{admin}/metrics", timeout=10).read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(name))


def sample(pid, admin):
    with open(f"/proc/{pid}/status") as f:
        rss = int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) / 1024
    return {
        "rss_mib": round(rss, 1),
        "open_fds": len(os.listdir(f"/proc/{pid}/fd")),
        "tasks": int(metric(admin, "redshift_export_runtime_alive_tasks")),
        "completed": int(metric(admin, 'redshift_export_jobs_total{error_code="",outcome="completed"}')),
    }


def main():
    emulator, emulator_url = start_emulator()
    queue = sqs.create_queue(QueueName=f"soak-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    log_path = f"{ROOT}/target/soak-worker.log"
    worker = subprocess.Popen(
        [f"{ROOT}/target/release/redshift-export-worker", "run", "--config", f"{ROOT}/config/local.toml"],
        env={**env,
             "EXPORT_WORKER__QUEUE__URL": queue,
             "EXPORT_WORKER__QUEUE__DEAD_LETTER_URL": env["DEVSTACK_DLQ_URL"],
             "EXPORT_WORKER__AWS__ENDPOINTS__REDSHIFT_DATA": emulator_url,
             "EXPORT_WORKER__EMAIL__SMTP__PORT": env["DEVSTACK_SMTP_PORT"],
             "EXPORT_WORKER__ADMIN__LISTEN": "127.0.0.1:0",
             "EXPORT_WORKER__LOGGING__FORMAT": "human",
             "EXPORT_WORKER__SWEEPER__ENABLED": "false",
             "EXPORT_WORKER__LOGGING__FILTER": "warn,redshift_export_worker::admin=info"},
        stderr=open(log_path, "w"))
    admin = admin_address(log_path)
    samples, sent, started = [], 0, time.monotonic()
    templates = [
        ("product_detail_by_sku", {"sku": "FLOWER12"}, "single"),
        ("orders_between", {"first": 1, "last": 500}, "parts"),
        ("hashes", {"rows": 20000}, "single"),
        ("order_notes", {"last": 200}, "parts"),
    ]
    next_sample = started
    while time.monotonic() - started < MINUTES * 60:
        now = time.monotonic()
        if now >= next_sample:
            s = sample(worker.pid, admin)
            s["minute"] = round((now - started) / 60, 1)
            s["sent"] = sent
            samples.append(s)
            print(json.dumps(s), flush=True)
            next_sample += 60
        while sent < (now - started) * PER_SECOND:
            query, params, layout = templates[sent % len(templates)]
            body = {"version": 1, "request_id": f"soak-{uuid.uuid4().hex}", "query": query, "params": params, "layout": layout}
            sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(body))
            sent += 1
        time.sleep(0.05)
    time.sleep(20)
    last = sample(worker.pid, admin)
    last["minute"] = round((time.monotonic() - started) / 60, 1)
    last["sent"] = sent
    samples.append(last)
    worker.terminate()
    worker.wait(timeout=120)
    emulator.terminate()
    warm = samples[min(2, len(samples) - 1)]
    report = {
        "minutes": MINUTES, "requests_per_second": PER_SECOND, "sent": sent, "completed": last["completed"],
        "samples": samples,
        "growth_after_warmup": {k: round(last[k] - warm[k], 1) for k in ("rss_mib", "open_fds", "tasks")},
        "worker_exit_code": worker.returncode,
    }
    with open(f"{ROOT}/target/soak-report.json", "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}))


if __name__ == "__main__":
    main()
