"""Fleet-wide rate limits against a fake upstream that allows R requests/s
(token bucket, small burst) and answers 429 with Retry-After above it."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


def run_batch(test, c, n, *flags):
    inp = harness.gen_batch(c.path("in.jsonl"), n)
    t0 = time.time()
    batch = c.llmq("submit", inp, "--quiet", "--max-attempts", "20", *flags,
                   check=0).stdout.strip()
    c.llmq("wait", batch, "--quiet", check=0)
    wall = time.time() - t0
    st = c.status(batch)
    test.assertEqual(st["request_counts"]["completed"], n)
    test.assertEqual(st["request_counts"]["failed"], 0)
    stats = c.fake_get("/stats")
    n429 = stats["by_status"].get("429", 0)
    return wall, n429, stats["requests"]


class RateLimit(harness.ClusterTest):
    RATE = 400

    def check_learned(self, broker_args):
        self.c = c = harness.Cluster(workers=2, concurrency=200, broker_args=broker_args,
                                     fake_args=["--rate-limit", str(self.RATE),
                                                "--latency-ms", "20"])
        n = 4000
        wall, n429, requests = run_batch(self, c, n)
        ideal = n / self.RATE
        print(f"\n{broker_args or 'headers'}: {n} jobs at {self.RATE}/s: wall {wall:.2f}s "
              f"({wall / ideal:.2f}x ideal), 429s {n429} of {requests} requests "
              f"({100.0 * n429 / requests:.1f}%)", file=sys.stderr)
        self.assertLessEqual(wall, 1.1 * ideal + 1.0)  # + submit, start-up and polling
        self.assertLessEqual(n429, 0.05 * requests)
        ups = harness.json.loads(c.llmq("workers", "--json", check=0).stdout)["upstreams"]
        self.assertEqual(ups[0]["name"], "default")
        self.assertGreater(ups[0]["learned_rpm"], 0, "the limit was learned")
        self.assertEqual(ups[0]["responses_429"], n429)

    def test_finds_limit_from_provider_headers(self):
        self.check_learned([])

    def test_finds_limit_from_429s_alone(self):
        self.check_learned(["--ignore-ratelimit-headers"])

    def test_follows_a_limit_that_drops(self):
        self.c = c = harness.Cluster(workers=2, concurrency=200,
                                     fake_args=["--rate-limit", "400", "--latency-ms", "20"])
        inp = harness.gen_batch(c.path("in.jsonl"), 8000)
        batch = c.llmq("submit", inp, "--quiet", "--max-attempts", "50", check=0).stdout.strip()
        time.sleep(3)
        # the provider lowers its limit: restart the fake at 200/s, same port
        c.fake.stop()
        c.fake_args = ["--rate-limit", "200", "--latency-ms", "20"]
        c.start_fake()
        time.sleep(3)  # "within a few seconds"
        a = c.fake_get("/stats")
        time.sleep(3)
        b = c.fake_get("/stats")
        ok = b["by_status"].get("200", 0) - a["by_status"].get("200", 0)
        n429 = b["by_status"].get("429", 0) - a["by_status"].get("429", 0)
        print(f"\nafter the drop to 200/s: {ok / 3:.0f} ok/s, {n429} 429s in 3 s",
              file=sys.stderr)
        self.assertGreaterEqual(ok / 3, 0.85 * 200)
        self.assertLessEqual(n429, 0.05 * (ok + n429))
        c.llmq("cancel", batch, check=0)

    def test_configured_budget_below_limit_no_429(self):
        budget = 300  # per second, under the provider's 400
        self.c = c = harness.Cluster(workers=2, concurrency=200,
                                     broker_args=["--limit", f"default:rpm={budget * 60}"],
                                     fake_args=["--rate-limit", str(self.RATE),
                                                "--latency-ms", "20"])
        n = 3000
        wall, n429, _ = run_batch(self, c, n)
        self.assertEqual(n429, 0)
        rate = n / wall
        print(f"\nbudget {budget}/s: {rate:.0f} jobs/s", file=sys.stderr)
        self.assertGreaterEqual(rate, 0.95 * budget * n / (n + 0.5 * budget))  # start-up slack
        self.assertLessEqual(rate, 1.05 * budget)


if __name__ == "__main__":
    harness.main()
