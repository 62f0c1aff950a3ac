"""The response cache (submit/run --cache): a re-run pays nothing twice.
A 10,000-job batch run twice makes no upstream request the second time and
gives the same output apart from the batch id; 100 changed lines (and only
those) reach the upstream; without --cache nothing is read from or written
to the cache; key order and whitespace in a body do not matter; cache stats
and clear. Wall times are printed, not asserted (bench/ measures them)."""
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


def requests(c):
    return c.fake_get("/stats")["requests"]


def cache_stats(c):
    return json.loads(c.llmq("cache", "stats", "--json", check=0).stdout)


def without_batch_id(lines):
    return [re.sub(r"batch_req_batch_[0-9a-f]+_", "batch_req_X_", ln) for ln in lines]


class Cache(harness.ClusterTest):
    def run_batch(self, c, inp, out, *flags):
        t0 = time.time()
        c.llmq("run", inp, "-o", out, "--quiet", *flags, check=0)
        return time.time() - t0

    def test_rerun_pays_nothing_twice(self):
        self.c = c = harness.Cluster(workers=2, concurrency=200,
                                     fake_args=["--latency-ms", "20"])
        inp = harness.gen_batch(c.path("in.jsonl"), 10000)
        first = self.run_batch(c, inp, c.path("out1.jsonl"), "--cache")
        r1 = requests(c)
        self.assertEqual(r1, 10000)
        self.assertEqual(cache_stats(c)["entries"], 10000)
        second = self.run_batch(c, inp, c.path("out2.jsonl"), "--cache")
        self.assertEqual(requests(c), r1, "the second run reached the upstream")
        with open(c.path("out1.jsonl")) as f1, open(c.path("out2.jsonl")) as f2:
            a, b = f1.read().splitlines(), f2.read().splitlines()
        self.assertEqual(without_batch_id(a), without_batch_id(b))
        self.assertNotEqual(a[0], b[0], "the batch id differs")
        batch = json.loads(b[0])["id"].split("_req_")[1].rsplit("_", 1)[0]
        st = c.status(batch)
        self.assertEqual(st["llmq"]["cached"], 10000)
        self.assertGreater(st["llmq"]["cached_prompt_tokens"], 0)
        self.assertEqual(st["request_counts"]["completed"], 10000)
        stats = cache_stats(c)
        self.assertEqual(stats["hits"], 10000)
        self.assertGreater(stats["tokens_saved"], 0)
        print(f"\n10,000 jobs at 20 ms: first run {first:.2f}s, second (cached) {second:.2f}s "
              f"({first / second:.1f}x); {stats['bytes'] / stats['entries']:.0f} bytes per "
              "cached response (value)", file=sys.stderr)

        # 100 lines changed: exactly those reach the upstream
        changed = c.path("changed.jsonl")
        with open(inp) as src, open(changed, "w") as dst:
            for i, line in enumerate(src):
                if i % 100 == 7:
                    job = json.loads(line)
                    job["body"]["messages"][0]["content"] += " (edited)"
                    line = json.dumps(job) + "\n"
                dst.write(line)
        before = c.fake_get("/counts")
        self.run_batch(c, changed, c.path("out3.jsonl"), "--cache")
        after = c.fake_get("/counts")
        self.assertEqual(requests(c), r1 + 100)
        grew = sorted(int(k.split("-")[1]) for k in after if after[k] != before.get(k))
        self.assertEqual(grew, [i for i in range(10000) if i % 100 == 7])

    def test_without_cache_nothing_read_or_written(self):
        self.c = c = harness.Cluster(workers=1, concurrency=100)
        inp = harness.gen_batch(c.path("in.jsonl"), 500)
        self.run_batch(c, inp, c.path("a.jsonl"), "--cache")
        self.assertEqual(cache_stats(c)["stores"], 500)
        self.run_batch(c, inp, c.path("b.jsonl"))  # no --cache
        self.assertEqual(requests(c), 1000, "without --cache every job runs")
        st = cache_stats(c)
        self.assertEqual((st["stores"], st["hits"], st["entries"]), (500, 0, 500))

    def test_body_canonical_and_clear(self):
        self.c = c = harness.Cluster(workers=1, concurrency=50)
        a, b = c.path("a.jsonl"), c.path("b.jsonl")
        with open(a, "w") as f:
            for i in range(50):
                body = {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}],
                        "temperature": 0.7, "metadata": {"custom_id": f"x-{i}"}}
                f.write(json.dumps({"custom_id": f"x-{i}", "method": "POST",
                                    "url": "/v1/chat/completions", "body": body}) + "\n")
        with open(b, "w") as f:  # the same bodies, keys reordered, other spacing
            for i in range(50):
                body = ('{ "temperature":0.7, "metadata" : {"custom_id":"x-%d"}, '
                        '"messages":[ {"content":"q%d","role":"user"} ], "model":"m" }' % (i, i))
                f.write('{"custom_id":"y-%d","method":"POST","url":"/v1/chat/completions",'
                        '"body":%s}\n' % (i, body))
        self.run_batch(c, a, c.path("a.out"), "--cache")
        self.run_batch(c, b, c.path("b.out"), "--cache")
        self.assertEqual(requests(c), 50)
        out = harness.read_jsonl(c.path("b.out"))
        self.assertEqual([x["custom_id"] for x in out], [f"y-{i}" for i in range(50)])
        r = c.llmq("cache", "clear", "--upstream", "other", check=0)
        self.assertIn("cleared 0", r.stdout)
        r = c.llmq("cache", "clear", check=0)
        self.assertIn("cleared 50", r.stdout)
        self.assertEqual(cache_stats(c)["entries"], 0)
        self.run_batch(c, b, c.path("c.out"), "--cache")
        self.assertEqual(requests(c), 100, "after clear the requests run again")


if __name__ == "__main__":
    harness.main()
