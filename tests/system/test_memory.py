"""Redis never fills silently (guarantees 1, 2 and 9 under memory pressure):
a real redis-server with maxmemory; admission refuses new batches before
Redis is full and cleans up a half-submitted unnamed batch; results that
Redis refuses are kept and written later, with dispatch held meanwhile;
`llmq delete` and `--retention` remove finished batches with all their keys;
an eviction policy that would lose jobs stops the broker at start."""
import json
import os
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


def dbsize(c):
    return int(c.redis_cli("DBSIZE").strip() or 0)


def batch_keys(c):
    """Every key but the fleet's pacing state (llmq:ratelimits, learned
    limits kept on purpose, and llmq:rlshare:*, which expires by itself)."""
    keys = c.redis_cli("KEYS", "*").split()
    return sorted(k for k in keys
                  if k != "llmq:ratelimits" and not k.startswith("llmq:rlshare:"))


def used_memory(c):
    for line in c.redis_cli("INFO", "memory").splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":")[1])
    return 0


class Memory(harness.ClusterTest):
    def test_eviction_policy_stops_the_broker(self):
        self.c = c = harness.Cluster(workers=0, start=False)
        c.start_redis()
        c.redis_cli("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
        b = c.start_broker()
        c._wait(lambda: not b.alive(), "the broker to refuse the eviction policy", 15)
        self.assertEqual(b.p.returncode, 1)
        log = c.tail("broker.log", 10)
        self.assertIn("maxmemory-policy", log)
        self.assertIn("noeviction", log)
        c.broker = None  # exited on purpose

    def test_delete_refuses_active_and_removes_finished(self):
        self.c = c = harness.Cluster(workers=1, concurrency=20,
                                     fake_args=["--latency-ms", "20"])
        before = batch_keys(c)
        inp = harness.gen_batch(c.path("a.jsonl"), 300)
        batch = c.llmq("submit", inp, "--quiet", check=0).stdout.strip()
        r = c.llmq("delete", batch)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("cancel it first", r.stderr)
        self.assertEqual(c.status(batch)["request_counts"]["total"], 300)
        c.llmq("wait", batch, "--quiet", check=0)
        c.llmq("results", batch, "-o", c.path("a.out"), "--quiet", check=0)
        self.assertEqual(len(harness.read_jsonl(c.path("a.out"))), 300)
        r = c.llmq("delete", batch, "batch_doesnotexist")
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{batch} deleted", r.stdout)
        self.assertIn("no such batch", r.stderr)
        self.assertEqual(c.llmq("status", batch).returncode, 1)
        self.assertEqual(batch_keys(c), before, c.redis_cli("KEYS", "*"))

    def test_retention_removes_fetched_batch(self):
        self.c = c = harness.Cluster(workers=1, concurrency=50,
                                     broker_args=["--retention", "2s"])
        before = dbsize(c)
        inp = harness.gen_batch(c.path("a.jsonl"), 500)
        # submitted and finished but not fetched: kept however long it waits
        batch = c.llmq("submit", inp, "--quiet", check=0).stdout.strip()
        c.llmq("wait", batch, "--quiet", check=0)
        time.sleep(3)
        st = c.status(batch)
        self.assertEqual(st["status"], "completed")
        self.assertIsNone(st["expires_at"])
        c.llmq("results", batch, "-o", c.path("a.out"), "--quiet", check=0)
        st = c.status(batch)
        self.assertIsNotNone(st["expires_at"])
        self.assertLessEqual(st["expires_at"] - time.time(), 3)
        c._wait(lambda: dbsize(c) == before, "the batch to expire with all its keys", 15)
        self.assertEqual(c.llmq("status", batch).returncode, 1)
        self.assertIn("removed: its retention ran out", c.tail("broker.log", 20))

    def test_full_redis_refuses_new_batch_and_keeps_results(self):
        # 40 MB of maxmemory; new batches refused above 60% of it.
        self.c = c = harness.Cluster(
            workers=1, concurrency=50, start=False,
            fake_args=["--latency-ms", "20", "--body-bytes", "1500"],
            broker_args=["--redis-high-water", "60"])
        c.start_redis()
        c.redis_cli("CONFIG", "SET", "maxmemory", "40mb")
        c.start_fake()
        c.start_broker()
        c.start_worker()
        c.wait_workers(1)
        pad = "x" * 1500
        running = harness.gen_batch(c.path("run.jsonl"), 3000, prefix="run-",
                                    body_extra={"pad": pad})
        batch_a = c.llmq("submit", running, "--quiet", check=0).stdout.strip()
        big = harness.gen_batch(c.path("big.jsonl"), 30000, prefix="big-",
                                body_extra={"pad": pad})
        time.sleep(1.5)  # the broker has read Redis's memory since
        r = c.llmq("submit", big, "--quiet")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("Redis is", r.stderr)
        self.assertIn("llmq delete", r.stderr)
        self.assertIn("maxmemory", r.stderr)
        self.assertIn("was removed", r.stderr)
        # the partly submitted unnamed batch is gone
        listed = json.loads(c.llmq("list", "--json", check=0).stdout)["data"]
        self.assertEqual([b["id"] for b in listed], [batch_a])
        # the running batch finishes with every result, none run twice
        c.llmq("wait", batch_a, "--quiet", check=0)
        out = c.path("run.out")
        c.llmq("results", batch_a, "-o", out, "--quiet", check=0)
        lines = harness.read_jsonl(out)
        self.assertEqual([x["custom_id"] for x in lines], [f"run-{i}" for i in range(3000)])
        counts = c.fake_get("/counts")
        self.assertEqual(sum(1 for k, v in counts.items() if v > 1), 0)
        self.assertNotIn("REPORT failed", c.tail("broker.log", 200))
        # free the space: delete the finished batch, then a new batch runs
        c.llmq("delete", batch_a, check=0)
        small = harness.gen_batch(c.path("small.jsonl"), 200, prefix="small-")
        c.llmq("run", small, "-o", c.path("small.out"), "--quiet", check=0)

    def test_results_refused_are_held_then_written(self):
        port = harness.free_port()
        self.c = c = harness.Cluster(workers=1, concurrency=100,
                                     fake_args=["--latency-ms", "100"],
                                     broker_args=["--metrics", f"127.0.0.1:{port}"])
        inp = harness.gen_batch(c.path("in.jsonl"), 3000)
        batch = c.llmq("submit", inp, "--quiet", check=0).stdout.strip()
        c._wait(lambda: c.status(batch)["request_counts"]["completed"] > 200, "progress", 30)
        # Redis refuses every write from now on (OOM): results must be kept
        c.redis_cli("CONFIG", "SET", "maxmemory", str(max(used_memory(c) // 2, 1024 * 1024)))

        def blocked():
            w = json.loads(c.llmq("workers", "--json", check=0).stdout)
            return w["redis"]["results_blocked"] and w["redis"]["results_held"] > 0
        c._wait(blocked, "the broker to report results blocked", 15)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        self.assertIn("llmq_results_blocked 1", text)
        time.sleep(1)  # jobs in flight when Redis refused finish (100 ms each)

        def held():
            return json.loads(c.llmq("workers", "--json", check=0).stdout)["redis"]["results_held"]
        held_then, done_then = held(), c.status(batch)["request_counts"]["completed"]
        time.sleep(2)
        # dispatch is held: nothing new runs, so nothing more arrives
        self.assertEqual(held(), held_then)
        self.assertLessEqual(held_then, 3 * 100)
        self.assertEqual(c.status(batch)["request_counts"]["completed"], done_then)
        c.redis_cli("CONFIG", "SET", "maxmemory", "0")
        c.llmq("wait", batch, "--quiet", check=0)
        c.llmq("results", batch, "-o", c.path("out.jsonl"), "--quiet", check=0)
        lines = harness.read_jsonl(c.path("out.jsonl"))
        self.assertEqual(len(lines), 3000)
        self.assertTrue(all(x["error"] is None for x in lines))
        counts = c.fake_get("/counts")
        self.assertEqual(sum(1 for v in counts.values() if v > 1), 0,
                         "a held result must not make its job run again")
        self.assertIn("Redis refuses results", c.tail("broker.log", 200))
        self.assertIn("Redis takes results again", c.tail("broker.log", 200))

    def test_results_wait_for_the_outstanding_report_and_survive_a_refusal(self):
        """At most one small REPORT call is outstanding (Nagle): results that
        arrive meanwhile wait in the broker and go in the next call. Here the
        outstanding call is stuck (CLIENT PAUSE WRITE), results pile up
        behind it, then Redis refuses it (OOM) and later takes results again:
        every result is recorded exactly once and no job runs twice."""
        self.c = c = harness.Cluster(workers=1, concurrency=50,
                                     fake_args=["--latency-ms", "20"])
        inp = harness.gen_batch(c.path("in.jsonl"), 2000)
        batch = c.llmq("submit", inp, "--quiet", check=0).stdout.strip()
        c._wait(lambda: c.status(batch)["request_counts"]["completed"] > 100, "progress", 30)

        def redis_state():
            return json.loads(c.llmq("workers", "--json", check=0).stdout)["redis"]
        # scripts wait while paused (the broker's command timeout is 10 s)
        c.redis_cli("CLIENT", "PAUSE", "8000", "WRITE")
        try:
            # results pile up behind the one outstanding call, not blocked
            c._wait(lambda: redis_state()["results_held"] >= 20, "results waiting", 6)
            self.assertFalse(redis_state()["results_blocked"])
            # the outstanding call (and the next ones) are refused
            c.redis_cli("CONFIG", "SET", "maxmemory", "1mb")
        finally:
            c.redis_cli("CLIENT", "UNPAUSE")
        c._wait(lambda: redis_state()["results_blocked"], "results blocked", 15)
        c.redis_cli("CONFIG", "SET", "maxmemory", "0")
        c.llmq("wait", batch, "--quiet", check=0)
        c.llmq("results", batch, "-o", c.path("out.jsonl"), "--quiet", check=0)
        lines = harness.read_jsonl(c.path("out.jsonl"))
        self.assertEqual([x["custom_id"] for x in lines], [f"req-{i}" for i in range(2000)])
        self.assertTrue(all(x["error"] is None for x in lines))
        st = c.status(batch)["request_counts"]
        self.assertEqual((st["completed"], st["failed"]), (2000, 0))
        counts = c.fake_get("/counts")
        self.assertEqual(sum(1 for v in counts.values() if v > 1), 0)
        self.assertIn("Redis refuses results", c.tail("broker.log", 200))
        self.assertIn("Redis takes results again", c.tail("broker.log", 200))


if __name__ == "__main__":
    harness.main()
