"""Bytes of Redis per job: while stored (submitted, not run), and after the
batch has completed (only results are kept), for small and large prompts.
Usage: /usr/bin/python3 bench/redis_memory.py [--bin build] [--jobs N]"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "system"))
import harness  # noqa: E402


def used(c):
    for line in c.redis_cli("INFO", "memory").splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":")[1])
    return 0


def measure(n, pad, response_bytes):
    c = harness.Cluster(workers=0, start=False,
                        fake_args=["--body-bytes", str(response_bytes)] if response_bytes else [])
    try:
        c.start()
        base = used(c)
        extra = {"pad": "x" * pad} if pad else None
        inp = harness.gen_batch(c.path("in.jsonl"), n, body_extra=extra)
        batch = c.llmq("submit", inp, "--quiet", check=0).stdout.strip()
        stored = used(c) - base
        c.start_worker()
        c.llmq("wait", batch, "--quiet", check=0)
        time.sleep(0.5)
        done = used(c) - base
        line = os.path.getsize(inp) / n
        return line, stored / n, done / n
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build")
    ap.add_argument("--jobs", type=int, default=20000)
    a = ap.parse_args()
    harness.BIN = os.path.abspath(a.bin)
    print("| prompt | input line (B) | Redis per job, stored (B) | Redis per job, completed (B) |")
    print("|---|---|---|---|")
    for name, pad, resp in (("small (~200 B line, ~300 B response)", 0, 0),
                            ("large (~2 KB line, ~2 KB response)", 1800, 2000)):
        line, stored, done = measure(a.jobs, pad, resp)
        print(f"| {name} | {line:.0f} | {stored:.0f} | {done:.0f} |")


if __name__ == "__main__":
    main()
