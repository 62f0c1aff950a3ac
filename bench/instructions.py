#!/usr/bin/python3
"""Instructions per job of each llmq process, on a fixed run (callgrind).

    bench/instructions.py [--bin DIR] [--jobs 10000] [--workers 1]
                          [--concurrency 256] [--json PATH]

Starts redis-server, llmq-broker and the workers under
`valgrind --tool=callgrind` (the fake upstream and the client natively,
the client is measured separately below), runs one `llmq run` of --jobs
jobs against an instant llmq-fake-upstream, stops everything and reads
each process's instruction total (callgrind's `summary:` line). The
client (`llmq run`, submit + collect) runs a second time under callgrind
against a native cluster. Figures are instructions per job, start-up
included (a few million instructions, under 1% at 10,000 jobs).

Instruction counts do not depend on the machine's load or speed, so
unlike CPU seconds they compare across runs and machines of one
architecture. Prints one JSON object (also written to --json):
{"jobs": N, "per_job": {"broker": .., "worker": .., "redis": ..,
"client": .., "llmq_total": ..}, "totals": {...}}.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))
import harness  # noqa: E402

# Under callgrind everything runs ~50x slower: heartbeats and leases long
# enough that no worker is declared lost and no lease expires.
SLOW_BROKER = ["--heartbeat-ms", "5000", "--lease-ms", "600000"]
SLOW_WORKER = ["--heartbeat-ms", "5000"]


def callgrind(out_dir, name):
    return ["valgrind", "--tool=callgrind", "--quiet",
            f"--callgrind-out-file={os.path.join(out_dir, 'cg.' + name)}"]


def summary(path):
    """The instruction total of one callgrind output file."""
    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"{path}: no summary line")


_NativeProc = harness.Proc
WRAP = {"names": set(), "dir": None}


class CgProc(_NativeProc):
    """harness.Proc, run under callgrind when its name starts with one of
    WRAP["names"] (the harness builds each argv itself)."""

    def __init__(self, name, argv, log_path, env=None):
        if WRAP["dir"] and any(name.startswith(w) for w in WRAP["names"]):
            argv = callgrind(WRAP["dir"], name) + list(argv)
        super().__init__(name, argv, log_path, env)


harness.Proc = CgProc


def run_llmq(c, inp, out, client_wrap=None, timeout=1800):
    argv = [os.path.join(harness.BIN, "llmq"), "run", inp, "-o", out, "--quiet"]
    env = dict(os.environ, LLMQ_BROKER=c.front)
    t0 = time.monotonic()
    p = subprocess.run((client_wrap or []) + argv, env=env, capture_output=True, text=True,
                       timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"llmq run exited {p.returncode}: {p.stderr[-800:]}")
    lines = sum(1 for _ in open(out))
    return time.monotonic() - t0, lines


def measure(jobs, workers, conc):
    res = {"jobs": jobs, "workers": workers, "concurrency": conc, "totals": {}}
    # 1: redis, broker and workers under callgrind
    c = harness.Cluster(workers=workers, concurrency=conc, broker_args=SLOW_BROKER,
                        worker_args=SLOW_WORKER, start=False)
    WRAP.update(names={"redis", "broker", "worker"}, dir=c.dir)
    try:
        c._wait = lambda cond, what, timeout=15: harness.Cluster._wait(c, cond, what, 120)
        c.start_redis()
        c.start_fake()
        c.start_broker()
        for _ in range(workers):
            c.start_worker()
        c.wait_workers(workers, timeout=120)
        inp = c.path("in.jsonl")
        harness.gen_batch(inp, jobs)
        wall, lines = run_llmq(c, inp, c.path("out.jsonl"))
        if lines != jobs:
            raise RuntimeError(f"{lines} output lines for {jobs} jobs")
        res["wall_s_under_callgrind"] = round(wall, 1)
        # a clean stop flushes callgrind's output
        for p in [*c.workers, c.broker, c.redis]:
            p.stop(timeout=120)
        for name in ["broker", "redis"] + [w.name for w in c.workers]:
            files = glob.glob(os.path.join(c.dir, f"cg.{name}*"))
            if not files:
                raise RuntimeError(f"no callgrind output for {name}")
            res["totals"][name] = sum(summary(f) for f in files)
    finally:
        WRAP.update(names=set(), dir=None)
        c.close()
    # 2: the client under callgrind against a native cluster (a second try
    # if the cluster fails to start: a free port taken meanwhile)
    for attempt in (1, 2):
        try:
            c = harness.Cluster(workers=workers, concurrency=conc)
        except AssertionError:
            if attempt == 2:
                raise
            continue
        try:
            inp = c.path("in.jsonl")
            harness.gen_batch(inp, jobs)
            run_llmq(c, inp, c.path("out.jsonl"), client_wrap=callgrind(c.dir, "client"))
            res["totals"]["client"] = summary(os.path.join(c.dir, "cg.client"))
        finally:
            c.close()
        break
    t = res["totals"]
    per = {"broker": t["broker"] / jobs, "redis": t["redis"] / jobs,
           "worker": sum(v for k, v in t.items() if k.startswith("worker")) / jobs,
           "client": t["client"] / jobs}
    per["llmq_total"] = sum(per.values())
    res["per_job"] = {k: round(v) for k, v in per.items()}
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.environ.get("LLMQ_BIN", os.path.join(ROOT, "build")))
    ap.add_argument("--jobs", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--json")
    a = ap.parse_args()
    harness.BIN = os.path.abspath(a.bin)
    res = measure(a.jobs, a.workers, a.concurrency)
    text = json.dumps(res, indent=1)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
