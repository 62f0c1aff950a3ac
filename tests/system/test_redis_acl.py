"""Redis least privilege (issue 18): the broker runs as the `llmq` user of
deploy/redis/llmq.acl (the harness does that for every system test, and
fails a test when Redis refused the broker anything: see
Cluster.acl_denied). Here: that user really is restricted -- no keys
outside the llmq: prefix, no admin or destructive commands, no EVAL of
arbitrary scripts -- while a whole batch runs through it, and the
placeholder in the shipped file makes Redis refuse to start until an
operator sets a password."""
import os
import socket
import subprocess
import tempfile

import harness


def resp(*args):
    out = f"*{len(args)}\r\n"
    for a in args:
        out += f"${len(a.encode())}\r\n{a}\r\n"
    return out.encode()


class RedisAcl(harness.ClusterTest):
    def setUp(self):
        if not harness.USE_ACL:
            self.skipTest("LLMQ_TEST_NO_ACL is set")

    def _as_llmq(self, c, *cmd):
        """Runs one command as the llmq user; returns Redis' first reply line."""
        with socket.create_connection(("127.0.0.1", c.redis_port), 5) as s:
            s.sendall(resp("AUTH", "llmq", c.redis_password) + resp(*cmd))
            data = b""
            while data.count(b"\r\n") < 2:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            lines = data.split(b"\r\n")
            self.assertEqual(lines[0], b"+OK")
            return lines[1].decode(errors="replace")

    def test_broker_runs_restricted(self):
        self.c = c = harness.Cluster(workers=1, concurrency=50)
        self.assertIn("llmq:", c.redis_url())
        inp = harness.gen_batch(c.path("in.jsonl"), 200)
        out = c.path("out.jsonl")
        c.llmq("run", inp, "-o", out, "--quiet", check=0)
        self.assertEqual(len(harness.read_jsonl(out)), 200)
        self.assertEqual(c.acl_denied(), [])
        # what the user may not do
        for cmd in (("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*"),
                    ("GET", "other:key"), ("SET", "other:key", "1"),
                    ("EVAL", "return 1", "0"), ("SCRIPT", "FLUSH"), ("SHUTDOWN",),
                    ("ACL", "LIST"), ("DEBUG", "SLEEP", "0"), ("MODULE", "LIST"),
                    ("SUBSCRIBE", "x"), ("MIGRATE", "h", "1", "k", "0", "1")):
            reply = self._as_llmq(c, *cmd)
            # DEBUG and MODULE are refused before the ACL by Redis 7's own
            # enable-*-command settings; every other one by the ACL
            self.assertTrue(reply.startswith("-NOPERM") or
                            (cmd[0] in ("DEBUG", "MODULE") and reply.startswith("-ERR")),
                            (cmd, reply))
        # and what it may
        self.assertEqual(self._as_llmq(c, "PING"), "+PONG")
        self.assertTrue(self._as_llmq(c, "HGETALL", "llmq:nothing").startswith("*0"))
        c.redis_cli("ACL", "LOG", "RESET")  # our own probes are not the broker's
        # the default user is off: an unauthenticated client can do nothing
        with socket.create_connection(("127.0.0.1", c.redis_port), 5) as s:
            s.sendall(resp("GET", "llmq:batches"))
            self.assertTrue(s.recv(256).startswith(b"-NOAUTH"))

    def test_shipped_file_refuses_to_start_unconfigured(self):
        d = tempfile.mkdtemp(prefix="llmq-acl-")
        try:
            port = harness.free_port()
            r = subprocess.run(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--dir", d, "--aclfile", harness.ACL_FILE],
                               capture_output=True, text=True, timeout=30)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("ACL errors", r.stdout + r.stderr)
        finally:
            subprocess.run(["rm", "-rf", d])


if __name__ == "__main__":
    harness.main()
