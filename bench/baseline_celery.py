#!/usr/bin/python3
"""Baseline 2: a Celery job queue on Redis doing the same POSTs.

    baseline_celery.py worker --pool threads|prefork --concurrency N
    baseline_celery.py drive IN OUT [--timeout S] [--idle-timeout S]

Configuration comes from the environment (the benchmark sets it):
    BENCH_CELERY_REDIS   redis://127.0.0.1:PORT/1  (broker and result backend)
    BENCH_UPSTREAM       http://127.0.0.1:PORT      (the fake upstream)

The task POSTs one request body with a keep-alive http.client connection per
thread (the stdlib equivalent of a requests.Session; python3-requests is not
a dependency) and retries 408/409/429/5xx and connection errors with Celery's
own machinery: autoretry_for, retry_backoff=True (1 s, 2 s, 4 s, ... with
full jitter), max_retries=4, i.e. at most 5 attempts. Celery 5.2.6 (Debian 12,
python3-celery) offers the prefork, threads and solo pools (eventlet/gevent
are not packaged); the benchmark picks the pool per scenario.

`worker` execs `celery worker` for this app (without gossip, mingle and
heartbeat, the usual tuning for a fleet). `drive` reads the JSONL file, submits
one task per line, collects the results with the Redis backend's native join,
writes OUT in the OpenAI batch output format and prints one JSON line:
jobs, ok, failed, lost (no result within --timeout, or none for
--idle-timeout seconds), submit_s, wall_s, last_result_s.
"""
import http.client
import json
import os
import sys
import threading
import time
import uuid
from urllib.parse import urlsplit

from celery import Celery

REDIS = os.environ.get("BENCH_CELERY_REDIS", "redis://127.0.0.1:6379/1")
UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:8000")
RETRYABLE = {408, 409, 429} | set(range(500, 600))

app = Celery("baseline_celery", broker=REDIS, backend=REDIS)
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                result_expires=3600, broker_connection_retry_on_startup=True,
                worker_hijack_root_logger=False)


class RetryableHTTP(Exception):
    """A 408/409/429/5xx answer; Celery retries it."""


_local = threading.local()


def _conn():
    c = getattr(_local, "conn", None)
    if c is None:
        u = urlsplit(UPSTREAM)
        c = _local.conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=60)
    return c


def _post(path, body):
    data = json.dumps(body).encode()
    c = _conn()
    try:
        c.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        raw = r.read()
        return r.status, r.getheader("x-request-id", ""), raw
    except Exception:
        c.close()
        _local.conn = None
        raise


@app.task(autoretry_for=(RetryableHTTP, OSError, http.client.HTTPException),
          retry_backoff=True, max_retries=4)
def post_job(path, body):
    status, rid, raw = _post(path, body)
    if status in RETRYABLE:
        raise RetryableHTTP(f"http_{status}")
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw.decode("utf-8", "replace")
    return {"status_code": status, "request_id": rid, "body": parsed}


class _Idle(Exception):
    """No result arrived for --idle-timeout seconds."""


def drive(inp, outp, timeout, idle_timeout):
    t0 = time.monotonic()
    with open(inp) as f:
        reqs = [json.loads(x) for x in f if x.strip()]
    results = [post_job.apply_async((r["url"], r["body"])) for r in reqs]
    submit_s = time.monotonic() - t0
    index = {r.id: i for i, r in enumerate(results)}
    got = [None] * len(results)
    last = [time.monotonic()]

    def cb(task_id, value):
        got[index[task_id]] = value
        last[0] = time.monotonic()

    def on_interval():
        if time.monotonic() - last[0] > idle_timeout:
            raise _Idle(f"no result for {idle_timeout:g} s")

    from celery.result import ResultSet
    try:
        ResultSet(results).join_native(callback=cb, propagate=False, timeout=timeout,
                                         on_interval=on_interval)
    except Exception as e:  # timeout or idle: some results never came (lost)
        print(f"baseline_celery: join stopped: {e!r}", file=sys.stderr)
    wall = time.monotonic() - t0
    batch = "batch_" + uuid.uuid4().hex
    ok = failed = lost = 0
    with open(outp, "w") as f:
        for i, (req, v) in enumerate(zip(reqs, got)):
            if v is None:
                lost += 1
                continue
            line = {"id": f"batch_req_{batch}_{i}", "custom_id": req["custom_id"]}
            if isinstance(v, dict) and 200 <= v.get("status_code", 0) < 300:
                ok += 1
                line.update(response=v, error=None)
            elif isinstance(v, dict):
                failed += 1
                line.update(response=v, error={"code": f"http_{v['status_code']}",
                                               "message": str(v["body"])[:500]})
            else:
                failed += 1
                code = str(v) if isinstance(v, RetryableHTTP) else "connection_error"
                line.update(response=None, error={"code": code, "message": repr(v)})
            f.write(json.dumps(line, separators=(",", ":")) + "\n")
    print(json.dumps({"jobs": len(reqs), "ok": ok, "failed": failed, "lost": lost,
                      "submit_s": round(submit_s, 3), "wall_s": round(wall, 3),
                      "last_result_s": round(last[0] - t0, 3)}))


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "worker":
        import argparse
        ap = argparse.ArgumentParser()
        ap.add_argument("--pool", default="threads")
        ap.add_argument("--concurrency", type=int, default=8)
        ap.add_argument("--hostname", default=f"w{os.getpid()}@bench")
        a = ap.parse_args(sys.argv[2:])
        app.worker_main(["worker", "-P", a.pool, "-c", str(a.concurrency), "-n", a.hostname,
                         "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
                         "--without-heartbeat"])
    elif len(sys.argv) >= 4 and sys.argv[1] == "drive":
        opt = {"--timeout": 600.0, "--idle-timeout": 600.0}
        for k in opt:
            if k in sys.argv:
                opt[k] = float(sys.argv[sys.argv.index(k) + 1])
        drive(sys.argv[2], sys.argv[3], opt["--timeout"], opt["--idle-timeout"])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
