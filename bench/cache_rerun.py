"""A 10,000-job batch run twice with --cache: the first run pays, the second
is answered from the cache. Usage: /usr/bin/python3 bench/cache_rerun.py
[LATENCY_MS] [BIN]  (default 500 ms: a fast real model)."""
import sys, time
import os
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'tests', 'system'))
import harness
harness.BIN = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else 'build')
lat = sys.argv[1] if len(sys.argv) > 1 else "500"
c = harness.Cluster(workers=2, concurrency=200, fake_args=["--latency-ms", lat])
try:
    inp = harness.gen_batch(c.path("in.jsonl"), 10000)
    t = time.time(); c.llmq("run", inp, "-o", c.path("o1"), "--quiet", "--cache", check=0); a = time.time() - t
    t = time.time(); c.llmq("run", inp, "-o", c.path("o2"), "--quiet", "--cache", check=0); b = time.time() - t
    print(f"latency {lat} ms: first {a:.2f} s, cached {b:.2f} s, {a/b:.1f}x; upstream requests {c.fake_get('/stats')['requests']}")
finally:
    c.close()
