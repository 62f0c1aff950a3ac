"""Chaos benchmark: a large batch with the broker and a worker killed (-9)
mid-run. Reports jobs lost, duplicate result lines and jobs executed more
than once (from the fake upstream's per-job request counts).

    /usr/bin/python3 bench/chaos.py --bin build [--jobs 100000] [--latency-ms 20]
"""
import argparse
import collections
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))
import harness  # noqa: E402


def main():
    harness.parse_bin_arg()
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=100000)
    ap.add_argument("--latency-ms", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=500)
    ap.add_argument("--lease-ms", type=int, default=5000)
    a = ap.parse_args()
    c = harness.Cluster(workers=2, concurrency=a.concurrency,
                        broker_args=["--lease-ms", str(a.lease_ms), "--heartbeat-ms", "500"],
                        worker_args=["--heartbeat-ms", "500"],
                        fake_args=["--latency-ms", str(a.latency_ms), "--log-level", "warn"])
    try:
        n = a.jobs
        inp = harness.gen_batch(c.path("in.jsonl"), n)
        t0 = time.time()
        batch = c.llmq("submit", inp, "--quiet", check=0).stdout.strip()

        def done():
            return sum(c.status(batch)["request_counts"][k] for k in ("completed", "failed"))

        while done() < n * 0.3:
            time.sleep(0.1)
        at_broker_kill = done()
        c.broker.kill9()
        time.sleep(1.0)
        c.start_broker()
        while done() < n * 0.6:
            time.sleep(0.1)
        at_worker_kill = done()
        c.workers[0].kill9()
        time.sleep(0.5)
        c.start_worker()
        c.llmq("wait", batch, "--quiet", "--retry-window", "120", check=0, timeout=900)
        wall = time.time() - t0
        out = c.path("out.jsonl")
        c.llmq("results", batch, "-o", out, "--quiet", check=0)
        ids = [x["custom_id"] for x in harness.read_jsonl(out)]
        want = {f"req-{i}" for i in range(n)}
        counter = collections.Counter(ids)
        lost = len(want - set(ids))
        dup_lines = sum(v - 1 for v in counter.values() if v > 1)
        counts = c.fake_get("/counts")
        twice = sum(1 for v in counts.values() if v > 1)
        extra = sum(v - 1 for v in counts.values() if v > 1)
        st = c.status(batch)
        print(f"jobs {n}, wall {wall:.1f} s, broker killed at {at_broker_kill} done, "
              f"worker killed at {at_worker_kill} done")
        print(f"jobs lost: {lost}")
        print(f"duplicate result lines: {dup_lines}")
        print(f"jobs executed more than once: {twice} ({extra} extra requests, "
              f"{100.0 * twice / n:.2f}% of jobs); duplicate results dropped by the broker: "
              f"{st['llmq']['duplicates']}")
        print(f"in input order: {ids == [f'req-{i}' for i in range(n)]}")
        return 0 if lost == 0 and dup_lines == 0 else 1
    finally:
        c.close()


if __name__ == "__main__":
    sys.exit(main())
