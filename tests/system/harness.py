"""System-test harness: starts real llmq processes on loopback.

A Cluster owns every process it starts (redis-server, llmq-fake-upstream,
llmq-broker, llmq-worker) on free 127.0.0.1 ports in a private temporary
directory, and stops all of them on close(), at interpreter exit and on
SIGTERM, also when a test fails. Tests call the `llmq` client through
Cluster.llmq().
"""
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

BIN = os.environ.get("LLMQ_BIN", "build")
_LIVE = []
SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Redis runs with deploy/redis/llmq.acl and the broker connects as its
# restricted `llmq` user (least privilege, issue 18); the tests' own
# inspection (redis_cli) goes through an extra admin user. LLMQ_TEST_NO_ACL=1
# runs Redis without the ACL file (the default user, as before).
ACL_FILE = os.path.join(SRC, "deploy", "redis", "llmq.acl")
USE_ACL = not os.environ.get("LLMQ_TEST_NO_ACL")
ADMIN_PASS = "llmq-test-admin-" + os.urandom(6).hex()


def parse_bin_arg():
    """Strips --bin DIR from sys.argv (ctest passes it) and remembers DIR."""
    global BIN
    if "--bin" in sys.argv:
        i = sys.argv.index("--bin")
        BIN = sys.argv[i + 1]
        del sys.argv[i:i + 2]
    BIN = os.path.abspath(BIN)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cleanup_all():
    for c in list(_LIVE):
        c.close()


atexit.register(_cleanup_all)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def gen_batch(path, n, prefix="req-", start=0, body_extra=None):
    """Writes an OpenAI Batch JSONL file of n chat requests."""
    with open(path, "w") as f:
        for i in range(start, start + n):
            cid = f"{prefix}{i}"
            body = {"model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"Say hello to {cid}"}],
                    "max_tokens": 16, "metadata": {"custom_id": cid}}
            if body_extra:
                body.update(body_extra)
            f.write(json.dumps({"custom_id": cid, "method": "POST",
                                "url": "/v1/chat/completions", "body": body},
                               separators=(",", ":")) + "\n")
    return path


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


class Proc:
    def __init__(self, name, argv, log_path, env=None):
        self.name, self.argv, self.log_path = name, argv, log_path
        self.killed = False
        self.log = open(log_path, "ab")
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=env, start_new_session=True)

    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        if self.alive():
            try:
                os.killpg(self.p.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout=10):
        """SIGTERM, then SIGKILL after timeout. Returns the exit status, or
        None if the process had already died (or was killed) before."""
        rc = None
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                rc = self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.p.wait()
                rc = "hung"
        elif not self.killed:
            rc = self.p.returncode  # died by itself: a crash unless 0
        if not self.log.closed:
            self.log.close()
        return rc

    def kill9(self):
        self.killed = True
        self.signal(signal.SIGKILL)
        self.p.wait()


class Cluster:
    """redis + fake upstream + broker + N workers on loopback."""

    def __init__(self, workers=2, concurrency=200, fake_args=(), broker_args=(),
                 worker_args=(), aof=False, start=True, worker_env=None, redis_password=None):
        self.dir = tempfile.mkdtemp(prefix="llmq-test-")
        self.redis_port = free_port()
        self.front = f"tcp://127.0.0.1:{free_port()}"
        self.back = f"tcp://127.0.0.1:{free_port()}"
        self.fake_port = None
        self.fake_args, self.broker_args = list(fake_args), list(broker_args)
        self.worker_args, self.aof = list(worker_args), aof
        self.redis_password = redis_password
        self.concurrency = concurrency
        self.worker_env = worker_env or {}
        self.redis = self.fake = self.broker = None
        self.workers = []
        self.old_procs = []  # replaced by a restart; still stopped at close
        self.bad_exits = []
        self.acl_denials = []
        self.nworkers = workers
        _LIVE.append(self)
        if start:
            self.start()

    def path(self, name):
        return os.path.join(self.dir, name)

    def start(self):
        self.start_redis()
        self.start_fake()
        self.start_broker()
        for _ in range(self.nworkers):
            self.start_worker()
        self.wait_workers(self.nworkers)

    # ---- processes ----
    def start_redis(self):
        if self.redis:
            self.old_procs.append(self.redis)
        argv = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                "--save", "", "--dir", self.dir, "--daemonize", "no",
                "--appendonly", "yes" if self.aof else "no",
                "--appendfsync", "everysec"]
        if USE_ACL:
            argv += ["--aclfile", self._write_acl()]
        elif self.redis_password:
            argv += ["--requirepass", self.redis_password]
        self.redis = Proc("redis", argv, self.path("redis.log"))
        self._wait(lambda: self._redis_ping(), "redis to start")

    def _write_acl(self):
        """deploy/redis/llmq.acl with the llmq user's password filled in and
        an admin user for the tests' own redis-cli. Returns its path."""
        if not self.redis_password:
            self.redis_password = "llmq-test-" + os.urandom(6).hex()
        with open(ACL_FILE) as f:
            text = f.read()
        if "#SHA256_OF_PASSWORD" not in text:
            raise AssertionError(f"{ACL_FILE}: no #SHA256_OF_PASSWORD placeholder")
        text = text.replace("#SHA256_OF_PASSWORD", ">" + self.redis_password)
        text += f"user admin on >{ADMIN_PASS} ~* &* +@all\n"
        path = self.path("users.acl")
        with open(path, "w") as f:
            f.write(text)
        return path

    def acl_denied(self):
        """Commands or keys Redis refused to the broker's `llmq` user (its
        ACL LOG), as a list of "reason:object" strings; [] without the ACL."""
        if not USE_ACL:
            return []
        lines = self.redis_cli("ACL", "LOG", "128").splitlines()
        out = []
        for i, line in enumerate(lines):
            if line == "username" and i + 1 < len(lines) and lines[i + 1] == "llmq":
                entry = lines[max(0, i - 8):i]
                reason = entry[entry.index("reason") + 1] if "reason" in entry else "?"
                obj = entry[entry.index("object") + 1] if "object" in entry else "?"
                if reason != "auth":  # a wrong password is a test's own doing
                    out.append(f"{reason}:{obj}")
        return out

    def _redis_ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.redis_port), 0.2) as s:
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
                return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")
        except OSError:
            return False

    def redis_cli(self, *args):
        if USE_ACL:
            auth = ["--user", "admin", "--pass", ADMIN_PASS, "--no-auth-warning"]
        elif self.redis_password:
            auth = ["-a", self.redis_password, "--no-auth-warning"]
        else:
            auth = []
        return subprocess.run(["redis-cli", "-p", str(self.redis_port), *auth, *args],
                              capture_output=True, text=True, timeout=30).stdout

    def start_fake(self, extra=None):
        port_file = self.path("fake.port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        port = self.fake_port or 0
        argv = [os.path.join(BIN, "llmq-fake-upstream"), "--port", str(port),
                "--port-file", port_file, "--seed", "1", *self.fake_args, *(extra or [])]
        self.fake = Proc("fake", argv, self.path("fake.log"))
        self._wait(lambda: os.path.exists(port_file), "fake upstream to start")
        with open(port_file) as f:
            self.fake_port = int(f.read().strip())

    def redis_url(self, password=None):
        pw = password if password is not None else self.redis_password
        user = "llmq" if USE_ACL else ""
        auth = f"{user}:{pw}@" if pw else ""
        return f"redis://{auth}127.0.0.1:{self.redis_port}/0"

    def start_broker(self):
        if self.broker:
            self.old_procs.append(self.broker)
        argv = [os.path.join(BIN, "llmq-broker"), "--frontend", self.front,
                "--backend", self.back, "--redis", self.redis_url(),
                *self.broker_args]
        self.broker = Proc("broker", argv, self.path("broker.log"))
        return self.broker

    def start_worker(self, extra=None, env_extra=None):
        i = len(self.workers)
        env = dict(os.environ)
        env.update(self.worker_env)
        env.update(env_extra or {})
        argv = [os.path.join(BIN, "llmq-worker"), "--broker", self.back,
                "--upstream", f"http://127.0.0.1:{self.fake_port}",
                "--concurrency", str(self.concurrency), "--id", f"w{i}-{os.getpid()}",
                *self.worker_args, *(extra or [])]
        w = Proc(f"worker{i}", argv, self.path(f"worker{i}.log"), env=env)
        self.workers.append(w)
        return w

    def close(self, keep_dir=False):
        """Stops everything; records in self.bad_exits our processes that did
        not exit 0 (crashes, sanitizer reports, hangs on SIGTERM)."""
        bad = []
        for p in [*self.workers, *self.old_procs, self.broker, self.fake, self.redis]:
            if p and p is self.redis and p.alive():
                self.acl_denials = self.acl_denied()
            if p:
                rc = p.stop()
                if p.name != "redis" and rc not in (None, 0):
                    bad.append((p.name, rc, p.log_path))
        self.bad_exits = bad
        if self in _LIVE:
            _LIVE.remove(self)
        if os.environ.get("LLMQ_KEEP_TEST_DIR"):
            print(f"test dir kept: {self.dir}", file=sys.stderr)
        elif not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _wait(self, cond, what, timeout=15):
        end = time.time() + timeout
        while time.time() < end:
            if cond():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    # ---- client ----
    def llmq(self, *args, timeout=300, check=None, env_extra=None):
        env = dict(os.environ)
        env["LLMQ_BROKER"] = self.front
        env.update(env_extra or {})
        r = subprocess.run([os.path.join(BIN, "llmq"), *args], capture_output=True, text=True,
                           timeout=timeout, env=env, stdin=subprocess.DEVNULL)
        if check is not None and r.returncode != check:
            raise AssertionError(f"llmq {' '.join(args)} exited {r.returncode}, wanted {check}\n"
                                 f"stdout: {r.stdout[-2000:]}\nstderr: {r.stderr[-2000:]}\n"
                                 f"broker log tail:\n{self.tail('broker.log')}")
        return r

    def llmq_bg(self, *args):
        env = dict(os.environ)
        env["LLMQ_BROKER"] = self.front
        return subprocess.Popen([os.path.join(BIN, "llmq"), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env,
                                stdin=subprocess.DEVNULL)

    def status(self, batch):
        return json.loads(self.llmq("status", batch, "--json", check=0).stdout)

    def wait_workers(self, n, timeout=15):
        def ok():
            r = self.llmq("workers", "--json", "--connect-timeout", "2")
            return r.returncode == 0 and len(json.loads(r.stdout)["workers"]) >= n
        self._wait(ok, f"{n} workers to register", timeout)

    def fake_get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.fake_port}{path}", timeout=30) as r:
            return json.loads(r.read())

    def tail(self, name, n=30):
        try:
            with open(self.path(name), errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


class ClusterTest(unittest.TestCase):
    """Base class: self.c is closed after each test, logs printed on failure."""
    cluster = None

    def tearDown(self):
        c = getattr(self, "c", None)
        if c is None:
            return
        result = getattr(getattr(self, "_outcome", None), "result", None)
        failed = result is not None and any(
            t is self for t, _ in list(result.failures) + list(result.errors))
        if failed:
            for name in ("broker.log", "worker0.log", "worker1.log", "fake.log"):
                print(f"---- {name} ----\n{c.tail(name)}", file=sys.stderr)
        c.close(keep_dir=True)
        bad = c.bad_exits
        logs = {path: c.tail(os.path.basename(path), 40) for _, _, path in bad}
        if not os.environ.get("LLMQ_KEEP_TEST_DIR"):
            shutil.rmtree(c.dir, ignore_errors=True)
        if bad and not failed:
            details = "\n".join(f"{n} exited {rc}:\n{logs[p]}" for n, rc, p in bad)
            self.fail(f"processes did not exit cleanly on SIGTERM:\n{details}")
        if c.acl_denials and not failed:
            self.fail(f"Redis refused the broker's ACL user: {c.acl_denials} "
                      f"(deploy/redis/llmq.acl lacks a command or key pattern)")


def main():
    parse_bin_arg()
    unittest.main(verbosity=2)
