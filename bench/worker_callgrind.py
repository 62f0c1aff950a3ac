#!/usr/bin/python3
"""Instructions per request of ONE llmq-worker (callgrind), a figure that a
noisy shared machine does not move.

    worker_callgrind.py [--bin DIR] [--jobs 2000,6000] [--conc 256]
                        [--tls h1|h2] [--worker-env K=V ...]

Runs the worker under `valgrind --tool=callgrind` (every thread, ZeroMQ's
I/O thread included) fed by bench/worker_driver.c, against a fresh
llmq-fake-upstream at 0 ms (with --tls, through bench/worker_tls.py's nginx
TLS front, HTTP/1.1 only or with h2 in ALPN), once per job count. Start-up and shut-down
cost the same in each run, so the difference of the totals divided by the
difference of the job counts is the cost of one request:
    Ir/request = (Ir(N2) - Ir(N1)) / (N2 - N1)
Prints one JSON line: {"ir_per_request": ..., "totals": {N: Ir, ...},
"connections": {N: connections the worker opened, ...}} (a run that had to
reconnect pays for more TLS handshakes: compare the counts).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import worker_bench  # noqa: E402
from worker_bench import harness  # noqa: E402


def run_one(bin_dir, driver, d, jobs, conc, url, ca_file, env_extra):
    fake = None
    if not url:
        fake = worker_bench.Fake(bin_dir, d, 0)
        url = fake.url
    port = harness.free_port()
    out = os.path.join(d, f"callgrind.{jobs}.{time.monotonic_ns()}.out")
    drv = subprocess.Popen([driver, "--bind", f"tcp://127.0.0.1:{port}", "--jobs", str(jobs)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            os.path.join(bin_dir, "llmq-worker"), "--broker", f"tcp://127.0.0.1:{port}",
            "--upstream", url, "--concurrency", str(conc), "--stats-interval", "1",
            "--heartbeat-ms", "5000", "--connect-timeout-ms", "300000"]
    if ca_file:
        argv += ["--ca-file", ca_file]
    env = dict(os.environ, **env_extra)
    log_path = os.path.join(d, f"worker-callgrind.{jobs}.log")
    log = open(log_path, "ab")
    w = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
    try:
        line = drv.stdout.readline().strip()
        if line != "registered":
            raise RuntimeError(f"driver said {line!r}")
        drv.stdin.write("go\n")
        drv.stdin.flush()
        res = json.loads(drv.stdout.readline())
    finally:
        w.terminate()
        w.wait(120)
        drv.wait(10)
        if fake:
            fake.stop()
        log.close()
    if res["ok"] != jobs:
        raise RuntimeError(f"only {res['ok']} of {jobs} jobs ok")
    with open(out) as f:
        total = int(re.search(r"^summary:\s+(\d+)", f.read(), re.M).group(1))
    with open(log_path) as f:
        conns = [int(x) for x in re.findall(r"connections=(\d+)", f.read())]
    return total, (conns[-1] if conns else None)


def measure(bin_dir, jobs=(2000, 6000), conc=256, tls=None, env_extra=None):
    d = tempfile.mkdtemp(prefix="llmq-wcg-")
    harness.BIN = bin_dir
    driver = worker_bench.build_driver(bin_dir, d)
    url = ca_file = front = fake = None
    if tls:
        import worker_tls
        ca_file, cert, key = worker_tls.make_certs(d)
        fake = worker_bench.Fake(bin_dir, d, 0)
        front = worker_tls.TlsFront(d, fake.port, cert, key)
        url = front.url(tls == "h2")
    try:
        runs = {n: run_one(bin_dir, driver, d, n, conc, url, ca_file, env_extra or {})
                for n in jobs}
    finally:
        if front:
            front.stop()
            fake.stop()
    totals = {n: r[0] for n, r in runs.items()}
    lo, hi = min(jobs), max(jobs)
    return {"ir_per_request": (totals[hi] - totals[lo]) / (hi - lo), "totals": totals,
            "connections": {n: r[1] for n, r in runs.items()}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(HERE), "build"))
    ap.add_argument("--jobs", default="2000,6000")
    ap.add_argument("--conc", type=int, default=256)
    ap.add_argument("--tls", choices=("h1", "h2"))
    ap.add_argument("--worker-env", action="append", default=[])
    a = ap.parse_args()
    env = dict(kv.split("=", 1) for kv in a.worker_env)
    r = measure(os.path.abspath(a.bin), tuple(int(x) for x in a.jobs.split(",")), a.conc,
                a.tls, env)
    print(json.dumps(r))


if __name__ == "__main__":
    main()
