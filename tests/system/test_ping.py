"""`llmq ping [WORKER]`: the health check of the containers (deploy/). Exit 0
when the broker answers (and a worker whose id starts with WORKER is
connected), 2 when the broker is unreachable or the worker absent."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


class Ping(harness.ClusterTest):
    def test_ping_broker_and_worker(self):
        self.c = c = harness.Cluster(workers=1, concurrency=10)
        r = c.llmq("ping", check=0)
        self.assertIn("answers, 1 workers", r.stdout)
        c.llmq("ping", "w0-", check=0)            # worker ids are w{i}-{pid}
        r = c.llmq("ping", "no-such-worker", "--connect-timeout", "2", check=2)
        self.assertIn("no worker 'no-such-worker*'", r.stderr)
        c.workers[0].stop()
        c._wait(lambda: c.llmq("ping", "w0-").returncode == 2, "the worker to be gone", 15)
        c.broker.stop()
        r = c.llmq("ping", "--connect-timeout", "1", check=2)
        self.assertEqual(r.stdout, "")


if __name__ == "__main__":
    harness.main()
