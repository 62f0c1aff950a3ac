#!/usr/bin/python3
"""Throughput with one broker and with two over one Redis (docs/scaling.md).

    nice -n 10 bench/ha_throughput.py [--bin build] [--jobs 50000] [--workers 4]

For 1 and 2 brokers: redis-server, the fake upstream at 0 ms, N workers
given every broker's backend, `llmq run` of JOBS jobs given every broker's
frontend. Prints jobs/s (wall time of `llmq run`: submit, run, collect) and
the CPU seconds of each process kind, read from /proc after the run.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "system"))
import harness  # noqa: E402
import test_ha  # noqa: E402


def cpu_s(pid):
    """utime + stime of a process, seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(nbrokers, jobs, workers):
    c = test_ha.Brokers(nbrokers=nbrokers, concurrency=500)
    try:
        c.start_brokers()
        idx = tuple(range(nbrokers))
        c.start_workers(workers, c.backs(*idx))
        c._wait(lambda: sum(c.workers_on(i) for i in idx) >= workers, "workers", 30)
        inp = harness.gen_batch(c.path("in.jsonl"), jobs)
        t0 = time.time()
        c.via(c.fronts(*idx), "run", inp, "-o", c.path("out.jsonl"), "--quiet", check=0,
              timeout=1800)
        wall = time.time() - t0
        cpu = {"redis": cpu_s(c.redis.p.pid),
               "brokers": sum(cpu_s(b[2].p.pid) for b in c.brokers),
               "workers": sum(cpu_s(w.p.pid) for w in c.workers),
               "fake": cpu_s(c.fake.p.pid)}
        return wall, cpu
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build")
    ap.add_argument("--jobs", type=int, default=50000)
    ap.add_argument("--workers", type=int, default=4)
    a = ap.parse_args()
    harness.BIN = os.path.abspath(a.bin)
    for n in (1, 2):
        wall, cpu = one(n, a.jobs, a.workers)
        per = " ".join(f"{k}={v:.1f}s ({v * 1e6 / a.jobs:.0f} us/job)" for k, v in cpu.items())
        print(f"{n} broker(s), {a.workers} workers, {a.jobs} jobs: {wall:.1f} s, "
              f"{a.jobs / wall:,.0f} jobs/s; CPU {per}", flush=True)


if __name__ == "__main__":
    main()
