"""End to end: a batch through client, broker, two workers, the fake upstream
and Redis; every custom_id answered exactly once, in input order."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


class EndToEnd(harness.ClusterTest):
    def test_10000_jobs_in_order_exactly_once(self):
        self.c = c = harness.Cluster(workers=2, concurrency=500)
        inp = harness.gen_batch(c.path("in.jsonl"), 10000)
        out = c.path("out.jsonl")
        r = c.llmq("run", inp, "-o", out, "--quiet", check=0)
        lines = harness.read_jsonl(out)
        self.assertEqual(len(lines), 10000)
        for i, line in enumerate(lines):
            self.assertEqual(line["custom_id"], f"req-{i}")
            self.assertIsNone(line["error"])
            self.assertEqual(line["response"]["status_code"], 200)
            body = line["response"]["body"]
            self.assertIn(f"req-{i}", json.dumps(body))  # the fake echoes the id
            self.assertTrue(line["id"].startswith("batch_req_"))
            self.assertTrue(line["response"]["request_id"])
        counts = c.fake_get("/counts")
        self.assertEqual(len(counts), 10000)
        executed_twice = sum(1 for v in counts.values() if v > 1)
        self.assertEqual(executed_twice, 0, "no fault injected: nothing should run twice")
        st = c.status(r.stdout.strip() or lines[0]["id"].split("_req_")[1].rsplit("_", 1)[0])
        self.assertEqual(st["status"], "completed")
        self.assertEqual(st["request_counts"], {"total": 10000, "completed": 10000, "failed": 0})
        self.assertGreater(st["usage"]["prompt_tokens"], 0)

    def test_output_format_and_failed_jobs(self):
        # custom_ids starting with "bad-" get a 400 from the fake: final failure.
        self.c = c = harness.Cluster(workers=1, concurrency=50,
                                     fake_args=["--bad-request-prefix", "bad-"])
        inp = c.path("in.jsonl")
        harness.gen_batch(inp, 20)
        harness.gen_batch(c.path("bad.jsonl"), 5, prefix="bad-")
        with open(inp, "a") as f, open(c.path("bad.jsonl")) as g:
            f.write(g.read())
        out, err = c.path("out.jsonl"), c.path("err.jsonl")
        c.llmq("run", inp, "-o", out, "--quiet", check=3)
        with open(out, "rb") as f:
            raw = f.read()
        self.assertTrue(raw.endswith(b"\n"))
        lines = [json.loads(x) for x in raw.decode().splitlines()]
        self.assertEqual([x["custom_id"] for x in lines],
                         [f"req-{i}" for i in range(20)] + [f"bad-{i}" for i in range(5)])
        for x in lines[20:]:
            self.assertEqual(x["error"]["code"], "http_400")
            self.assertTrue(x["error"]["message"])
            self.assertEqual(x["response"]["status_code"], 400)  # the last response is kept
        # --errors splits failed jobs into their own file (OpenAI's layout)
        batch = lines[0]["id"][len("batch_req_"):].rsplit("_", 1)[0]
        c.llmq("results", batch, "-o", out, "--errors", err, "--quiet", check=3)
        self.assertEqual(len(harness.read_jsonl(out)), 20)
        self.assertEqual([x["custom_id"] for x in harness.read_jsonl(err)],
                         [f"bad-{i}" for i in range(5)])
        counts = c.fake_get("/counts")
        self.assertTrue(all(counts[f"bad-{i}"] == 1 for i in range(5)), "a 400 is not retried")


if __name__ == "__main__":
    harness.main()
