"""make demo: a sample batch through the whole fleet on loopback.

Starts redis-server, the fake OpenAI-compatible upstream, llmq-broker and two
llmq-workers on free 127.0.0.1 ports, runs examples/batch.jsonl with
`llmq run`, prints a summary and stops everything it started.
"""
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))
import harness  # noqa: E402


def main():
    harness.parse_bin_arg()
    batch_file = os.path.join(ROOT, "examples", "batch.jsonl")
    print("llmq demo: starting redis-server, fake upstream (20 ms latency), broker, 2 workers")
    c = harness.Cluster(workers=2, concurrency=256, fake_args=["--latency-ms", "20",
                                                              "--jitter-ms", "10"])
    try:
        out = c.path("out.jsonl")
        t0 = time.time()
        env = dict(os.environ, LLMQ_BROKER=c.front)
        import subprocess
        r = subprocess.run([os.path.join(harness.BIN, "llmq"), "run", batch_file, "-o", out],
                           env=env, stdin=subprocess.DEVNULL)
        wall = time.time() - t0
        lines = harness.read_jsonl(out) if os.path.exists(out) else []
        ok = sum(1 for x in lines if x.get("error") is None)
        failed = len(lines) - ok
        with open(batch_file) as f:
            jobs = sum(1 for _ in f)
        print()
        print("llmq demo summary")
        print(f"  jobs       {jobs}")
        print(f"  succeeded  {ok}")
        print(f"  failed     {failed}")
        print(f"  wall time  {wall:.2f} s (submit + run + results)")
        print(f"  jobs/s     {jobs / wall:.0f}")
        if lines:
            print("  first line", json.dumps(lines[0])[:160] + "...")
        return 0 if r.returncode == 0 and ok == jobs else 1
    finally:
        c.close()
        print("llmq demo: stopped everything it started")


if __name__ == "__main__":
    sys.exit(main())
