#!/usr/bin/python3
"""Does an attack on the broker's /metrics listener delay job dispatch?

    bench/metrics_flood.py [--bin DIR] [--jobs N] [--rounds R] [--flood N]

Starts redis, the fake upstream (1 ms latency), a broker with --metrics and
two workers (tests/system/harness.py), then runs the same N-job batch
(`llmq run`, end to end) under three conditions, R rounds each, alternating:

  quiet      nothing else touches the broker
  flood      --flood idle connections (10,000) opened against /metrics plus
             50 slowloris senders trickling one byte per 100 ms
  scrape     8 threads fetching GET /metrics back to back (the rendering cost)

and prints jobs/s per condition (median of the rounds), also written to
bench/metrics_flood_results.md (--out). Nothing is asserted.
Run under `nice -n 10` on a shared machine.
"""
import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "system"))
import harness  # noqa: E402
from test_metrics_listener import Flood, raise_fd_limit  # noqa: E402


def run_batch(c, inp, tag):
    out = c.path(f"out-{tag}.jsonl")
    t0 = time.monotonic()
    c.llmq("run", inp, "-o", out, "--quiet", check=0, timeout=600)
    return time.monotonic() - t0


class Scrapers:
    def __init__(self, port, n=8):
        self.done, self.count = threading.Event(), 0
        self.threads = [threading.Thread(target=self._loop, args=(port,), daemon=True)
                        for _ in range(n)]
        for t in self.threads:
            t.start()

    def _loop(self, port):
        while not self.done.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                    r.read()
                self.count += 1
            except OSError:
                pass

    def stop(self):
        self.done.set()
        for t in self.threads:
            t.join(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build")
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--flood", type=int, default=10000)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "metrics_flood_results.md"))
    a = ap.parse_args()
    harness.BIN = os.path.abspath(a.bin)
    limit = raise_fd_limit(a.flood + 500)
    nflood = min(a.flood, limit - 300)
    mport = harness.free_port()
    c = harness.Cluster(workers=2, concurrency=200, fake_args=["--latency-ms", "1"],
                        broker_args=["--metrics", f"127.0.0.1:{mport}"])
    try:
        times = {"quiet": [], "flood": [], "scrape": []}
        extra = {}
        for r in range(a.rounds):
            inp = harness.gen_batch(c.path(f"in-{r}.jsonl"), a.jobs, prefix=f"r{r}-")
            for cond in times:
                tag = f"{cond}-{r}"
                if cond == "quiet":
                    times[cond].append(run_batch(c, inp, tag))
                elif cond == "flood":
                    fl = Flood(mport, nflood)
                    c._wait(lambda: fl.opened >= nflood // 2, "the flood", timeout=120)
                    times[cond].append(run_batch(c, inp, tag))
                    fl.stop()
                    extra["flood_opened"] = fl.opened
                else:
                    sc = Scrapers(mport)
                    times[cond].append(run_batch(c, inp, tag))
                    sc.stop()
                    extra["scrapes"] = sc.count
                print(f"round {r} {cond}: {a.jobs / times[cond][-1]:.0f} jobs/s", file=sys.stderr)
        commit = subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)),
                                 "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        lines = [f"# /metrics flood vs dispatch (bench/metrics_flood.py)\n",
                 f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit}, "
                 f"{os.cpu_count()} cores, load average at end "
                 f"{' '.join(open('/proc/loadavg').read().split()[:3])}. "
                 f"`{' '.join(sys.argv)}`: {a.jobs} jobs per `llmq run` (fake upstream 1 ms, "
                 f"2 workers x 200), {a.rounds} rounds; flood = {extra.get('flood_opened')} idle "
                 f"connections + 50 slowloris senders against /metrics during the run; "
                 f"scrape = 8 threads fetching /metrics back to back "
                 f"({extra.get('scrapes')} scrapes in the last round).\n",
                 "| condition | jobs/s (median) | runs (s) |", "|---|---|---|"]
        for cond, ts in times.items():
            lines.append(f"| {cond} | {a.jobs / statistics.median(ts):.0f} | "
                         f"{', '.join(f'{t:.2f}' for t in ts)} |")
        text = "\n".join(lines) + "\n"
        print(text)
        if a.out:
            with open(a.out, "w") as f:
                f.write(text)
    finally:
        c.close()


if __name__ == "__main__":
    main()
