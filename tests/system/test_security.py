"""Security: CURVE encryption and client allow-listing on both broker ports;
API keys never leave the worker."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


class Curve(harness.ClusterTest):
    def keygen(self, d, name):
        prefix = os.path.join(d, name)
        subprocess.run([os.path.join(harness.BIN, "llmq"), "keygen", prefix], check=True,
                       capture_output=True)
        with open(prefix + ".pub") as f:
            return prefix + ".key", f.read().strip()

    def test_curve_with_allow_list(self):
        import tempfile
        d = tempfile.mkdtemp(prefix="llmq-keys-")
        server_key, server_pub = self.keygen(d, "server")
        worker_key, worker_pub = self.keygen(d, "worker")
        client_key, client_pub = self.keygen(d, "client")
        stranger_key, _ = self.keygen(d, "stranger")
        self.assertEqual(oct(os.stat(server_key).st_mode & 0o777), "0o600")
        allowed = os.path.join(d, "clients.txt")
        with open(allowed, "w") as f:
            f.write(f"# workers and clients allowed\n{worker_pub}\n{client_pub}\n")
        self.c = c = harness.Cluster(
            workers=2, concurrency=50,
            broker_args=["--curve-secret-file", server_key, "--curve-clients", allowed],
            worker_args=["--curve-server-key", server_pub, "--curve-secret-file", worker_key],
            start=False)
        c.start_redis()
        c.start_fake()
        c.start_broker()
        for _ in range(2):
            c.start_worker()
        env = {"LLMQ_CURVE_SERVER_KEY": server_pub, "LLMQ_CURVE_SECRET_FILE": client_key}
        inp = harness.gen_batch(c.path("in.jsonl"), 200)
        out = c.path("out.jsonl")
        c.llmq("run", inp, "-o", out, "--quiet", env_extra=env, check=0)
        self.assertEqual(len(harness.read_jsonl(out)), 200)
        # plain client: no answer (the broker only speaks CURVE)
        r = c.llmq("list", "--connect-timeout", "1")
        self.assertEqual(r.returncode, 2)
        # right server key, but a client key not on the list: refused
        r = c.llmq("list", "--connect-timeout", "1", env_extra={
            "LLMQ_CURVE_SERVER_KEY": server_pub, "LLMQ_CURVE_SECRET_FILE": stranger_key})
        self.assertEqual(r.returncode, 2)
        self.assertIn("client key not allowed", c.tail("broker.log", 50))
        # a bad key file is a clear usage error
        bad = os.path.join(d, "bad.key")
        with open(bad, "w") as f:
            f.write("not a key\n")
        r = c.llmq("list", env_extra={"LLMQ_CURVE_SERVER_KEY": server_pub,
                                      "LLMQ_CURVE_SECRET_FILE": bad})
        self.assertEqual(r.returncode, 1)
        self.assertIn("Z85", r.stderr)

    def test_bad_broker_key_file_refused_at_start(self):
        self.c = c = harness.Cluster(workers=0, start=False)
        c.start_redis()
        bad = c.path("bad.key")
        with open(bad, "w") as f:
            f.write("short\n")
        c.broker_args = ["--curve-secret-file", bad]
        p = c.start_broker()
        p.p.wait(10)
        self.assertEqual(p.p.returncode, 1)
        p.killed = True  # exited on purpose


class RedisAuth(harness.ClusterTest):
    PASSWORD = "redis-pass-4f9a"

    def test_password_from_the_url(self):
        self.c = c = harness.Cluster(workers=1, concurrency=20, redis_password=self.PASSWORD)
        inp = harness.gen_batch(c.path("in.jsonl"), 30)
        out = c.path("out.jsonl")
        c.llmq("run", inp, "-o", out, "--quiet", check=0)
        self.assertEqual(len(harness.read_jsonl(out)), 30)
        self.assertIn("llmq:batches", c.redis_cli("--scan"))  # really in this Redis
        self.assertNotIn(self.PASSWORD, c.tail("broker.log", 200))
        # a wrong password: the broker never becomes ready, clients get exit 2
        c.broker.stop()
        c.broker_args = []
        c.redis_password, good = "wrong", c.redis_password
        c.start_broker()
        c.redis_password = good
        r = c.llmq("list", "--connect-timeout", "2")
        self.assertEqual(r.returncode, 2)
        self.assertIn("AUTH failed", c.tail("broker.log", 50))


class ApiKey(harness.ClusterTest):
    SECRET = "sk-test-0123456789abcdefSECRET"

    def test_key_reaches_upstream_and_nowhere_else(self):
        self.c = c = harness.Cluster(
            workers=1, concurrency=20, fake_args=["--api-key", self.SECRET],
            worker_args=["--log-level", "debug"], worker_env={"LLMQ_API_KEY": self.SECRET})
        inp = harness.gen_batch(c.path("in.jsonl"), 50)
        out = c.path("out.jsonl")
        c.llmq("run", inp, "-o", out, "--quiet", check=0)
        lines = harness.read_jsonl(out)
        self.assertTrue(all(x["error"] is None for x in lines))
        self.assertEqual(c.fake_get("/stats")["auth_failed"], 0)
        c.redis_cli("SAVE")
        worker_pid = c.workers[0].p.pid
        with open(f"/proc/{worker_pid}/cmdline", "rb") as f:
            cmdline = f.read()
        ps = "\n".join(line for line in subprocess.run(
            ["ps", "-ef"], capture_output=True, text=True).stdout.splitlines()
            if "llmq-fake-upstream" not in line)  # the test's fake takes it as a flag
        c.close(keep_dir=True)
        secret = self.SECRET.encode()
        self.assertNotIn(secret, cmdline)
        self.assertNotIn(self.SECRET, ps)
        for name in os.listdir(c.dir):  # logs, the Redis dump, the output
            if name == "fake.log":
                continue  # the fake upstream is the provider: it knows the key
            with open(os.path.join(c.dir, name), "rb") as f:
                self.assertNotIn(secret, f.read(), f"the key leaked into {name}")
        self.assertTrue(os.path.exists(os.path.join(c.dir, "dump.rdb")))


if __name__ == "__main__":
    harness.main()
