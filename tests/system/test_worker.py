"""Worker HTTP semantics and graceful drain, against fake upstreams through
the real broker and Redis.

Upstream: 429 with Retry-After (delta-seconds, HTTP date) and retry-after-ms,
500/503 retried, an always-500 job failing after exactly --max-attempts, hung
requests cut by the per-attempt timeout, dropped and refused connections, a
400 and an oversized body failing at once, the API key from the environment
or a key file (and never anywhere else). Drain: SIGTERM finishes what the
worker holds, delivers it and exits 0; a second SIGTERM exits at once.

To keep the file fast, one cluster serves a whole class: the Semantics worker
has one named upstream per scenario (`--upstream-named NAME=URL`), each a
fake upstream of its own with the misbehaviour under test, and a batch picks
its scenario with `submit --upstream NAME` (the broker paces every upstream
name separately, so the 429 scenarios do not slow the others down)."""
import email.utils
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

BROKER_FAST = ["--heartbeat-ms", "300", "--lease-ms", "5000", "--retry-base-ms", "50",
               "--retry-cap-ms", "400"]


def start_extra_fake(c, name, args):
    """Starts another llmq-fake-upstream owned by cluster c; returns its port."""
    port_file = c.path(f"fake-{name}.port")
    argv = [os.path.join(harness.BIN, "llmq-fake-upstream"), "--port", "0",
            "--port-file", port_file, "--seed", "1", *args]
    p = harness.Proc(f"fake-{name}", argv, c.path(f"fake-{name}.log"))
    c.old_procs.append(p)  # stopped (and its exit status checked) by c.close()
    c._wait(lambda: os.path.exists(port_file), f"fake {name} to start")
    with open(port_file) as f:
        return int(f.read().strip())


def fake_get(port, path):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        return json.loads(r.read())


def closed_port():
    """A loopback port nobody listens on (bound, then released)."""
    return harness.free_port()


def batch_of(lines):
    return lines[0]["id"][len("batch_req_"):].rsplit("_", 1)[0]


class ScriptedUpstream:
    """A tiny OpenAI-style server with exact control of the 429 headers: the
    first request of every custom_id gets a 429 whose retry hint depends on
    the path prefix (/s: Retry-After delta-seconds, /d: Retry-After HTTP
    date, /m: retry-after-ms only); later requests get 200. Records the
    arrival times of every request per custom_id."""
    HINT_S = 2      # Retry-After: 2
    HINT_D = 3      # Retry-After: <now + 3 s as an HTTP date>
    HINT_MS = 1500  # retry-after-ms: 1500

    def __init__(self):
        self.lock = threading.Lock()
        self.times = {}  # custom_id -> [arrival times]
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n))
                cid = body["metadata"]["custom_id"]
                now = time.time()
                with outer.lock:
                    seen = outer.times.setdefault(cid, [])
                    seen.append(now)
                    first = len(seen) == 1
                if first:
                    hdrs = []
                    if self.path.startswith("/s/"):
                        hdrs.append(("Retry-After", str(outer.HINT_S)))
                    elif self.path.startswith("/d/"):
                        hdrs.append(("Retry-After", email.utils.formatdate(
                            int(now) + outer.HINT_D, usegmt=True)))
                    else:
                        hdrs.append(("retry-after-ms", str(outer.HINT_MS)))
                    self.reply(429, {"error": {"message": "slow down (scripted)",
                                               "type": "requests",
                                               "code": "rate_limit_exceeded"}}, hdrs)
                else:
                    self.reply(200, {"id": f"chatcmpl-{cid}", "object": "chat.completion",
                                     "created": int(now), "model": "gpt-4o-mini",
                                     "choices": [{"index": 0, "finish_reason": "stop",
                                                  "message": {"role": "assistant",
                                                              "content": f"hello {cid}"}}],
                                     "usage": {"prompt_tokens": 5, "completion_tokens": 2,
                                               "total_tokens": 7}}, [])

            def reply(self, status, obj, hdrs):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in hdrs:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256  # the default backlog of 5 drops SYNs (1 s retransmit)

        self.server = Server(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class SharedClusterTest(unittest.TestCase):
    """One cluster per class (cls.c); every process must exit 0 on SIGTERM."""
    c = None

    def tearDown(self):
        result = getattr(getattr(self, "_outcome", None), "result", None)
        failed = result is not None and any(
            t is self for t, _ in list(result.failures) + list(result.errors))
        if failed and self.c:
            for name in sorted(os.listdir(self.c.dir)):
                if name.endswith(".log"):
                    print(f"---- {name} ----\n{self.c.tail(name, 15)}", file=sys.stderr)

    @classmethod
    def tearDownClass(cls):
        c = cls.c
        if c is None:
            return
        c.close(keep_dir=True)
        bad = c.bad_exits
        logs = {p: c.tail(os.path.basename(p), 30) for _, _, p in bad}
        if not os.environ.get("LLMQ_KEEP_TEST_DIR"):
            import shutil
            shutil.rmtree(c.dir, ignore_errors=True)
        if bad:
            details = "\n".join(f"{n} exited {rc}:\n{logs[p]}" for n, rc, p in bad)
            raise AssertionError(f"processes did not exit cleanly on SIGTERM:\n{details}")

    def run_batch(self, n, prefix, upstream=None, *flags, check=0):
        """Runs n jobs (custom_id prefix+i); returns (lines, wall seconds)."""
        c = self.c
        inp = harness.gen_batch(c.path(f"{prefix}in.jsonl"), n, prefix=prefix)
        out = c.path(f"{prefix}out.jsonl")
        args = ["run", inp, "-o", out, "--quiet", *flags]
        if upstream:
            args += ["--upstream", upstream]
        t0 = time.time()
        c.llmq(*args, check=check, timeout=120)
        wall = time.time() - t0
        lines = harness.read_jsonl(out)
        self.assertEqual([x["custom_id"] for x in lines], [f"{prefix}{i}" for i in range(n)])
        return lines, wall


class Semantics(SharedClusterTest):
    """One broker, one worker; one fake upstream (and upstream name) per
    scenario."""
    FAKES = {
        # name: fake flags
        "flaky": ["--fail-500", "0.25", "--fail-503", "0.15", "--always-fail-prefix", "doomed-",
                  "--bad-request-prefix", "bad-"],
        "drop": ["--drop", "0.3"],
        "hang": ["--hang", "0.2"],
        "hangall": ["--hang", "1.0"],
        "big": ["--body-bytes", "200000"],
        "rlsec": ["--rate-limit", "200", "--retry-after-format", "seconds"],
        "rldate": ["--rate-limit", "200", "--retry-after-format", "date"],
    }

    @classmethod
    def setUpClass(cls):
        # --ignore-ratelimit-headers: the broker learns from 429s and their
        # Retry-After alone, so the 429 scenarios exercise the worker's parsing.
        cls.c = c = harness.Cluster(workers=1, concurrency=300, start=False,
                                    broker_args=[*BROKER_FAST, "--ignore-ratelimit-headers"])
        try:
            c.start_redis()
            c.start_fake()
            cls.ports = {name: start_extra_fake(c, name, args) for name, args in cls.FAKES.items()}
            cls.scripted = ScriptedUpstream()
            cls.dead_port = closed_port()
            c.start_broker()
            extra = ["--max-response-bytes", "100000", "--heartbeat-ms", "300",
                     "--upstream-named", f"dead=http://127.0.0.1:{cls.dead_port}"]
            for name, port in cls.ports.items():
                extra += ["--upstream-named", f"{name}=http://127.0.0.1:{port}"]
            for kind in ("s", "d", "m"):
                extra += ["--upstream-named",
                          f"ra{kind}=http://127.0.0.1:{cls.scripted.port}/{kind}"]
            c.start_worker(extra=extra)
            c.wait_workers(1)
        except BaseException:
            c.close()
            raise

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "scripted", None):
            cls.scripted.close()
        super().tearDownClass()

    # ---- 429 ----
    def check_rate_limited(self, name):
        """400 jobs against a fake that allows 200 requests/s and answers 429
        with a Retry-After above it: every job ends ok, few 429s, and the
        batch takes about the ideal time (a deadline, so that a collapse of
        the rate fails in seconds instead of running on)."""
        c = self.c
        n, rate = 400, 200
        deadline = 3 * n / rate + 2
        inp = harness.gen_batch(c.path(f"{name}.jsonl"), n, prefix=f"{name}-")
        t0 = time.time()
        batch = c.llmq("submit", inp, "--quiet", "--upstream", name, "--max-attempts", "20",
                       check=0).stdout.strip()
        while True:
            rc = c.status(batch)["request_counts"]
            if rc["completed"] + rc["failed"] == n or time.time() - t0 > deadline:
                break
            time.sleep(0.1)
        wall = time.time() - t0
        stats = fake_get(self.ports[name], "/stats")
        n429 = stats["by_status"].get("429", 0)
        print(f"\n{name}: {rc['completed']} of {n} jobs done in {wall:.2f}s at {rate}/s "
              f"(ideal {n / rate:.1f}s), {n429} 429s of {stats['requests']} requests",
              file=sys.stderr)
        # The fake's bucket starts full (burst 10) and refills at 200/s. The
        # first contact costs the broker's initial window (32 requests in
        # flight, doubling every 50 ms while full) minus the burst in 429s,
        # and more when a loaded machine stalls the worker and its queued
        # requests meet a 10-token bucket at once (27 on a quiet machine, up
        # to 78 seen under a CI load; docs/benchmarks.md: "the first half
        # second costs some 50-250 429s" at 500/s). After that the broker
        # paces the upstream from the 429s and pauses it for each
        # Retry-After, so further 429s are rare probes. Without pacing the
        # worker's 300 slots would meet the bucket at once: hundreds.
        if rc["completed"] + rc["failed"] < n:
            c.llmq("cancel", batch, check=0)
            self.fail(f"{name}: only {rc['completed']} of {n} jobs done after {wall:.1f}s")
        self.assertLessEqual(n429, n // 4, "429s stay few")
        self.assertEqual(rc["failed"], 0)
        self.assertEqual(stats["by_status"].get("200", 0), n)

    def test_429_retry_after_seconds_fake(self):
        self.check_rate_limited("rlsec")

    # Whole-second Retry-After dates make pauses of 1-2 s. Before 7fd9c98 the
    # broker's limiter measured "successes over the last 300 ms" across such a
    # pause (~0) and collapsed to 1 request/s: 600 jobs took ~42 s, not 3 s.
    def test_429_retry_after_http_date_fake(self):
        self.check_rate_limited("rldate")

    def test_429_retry_hints_are_honoured(self):
        """Each job's first attempt gets a 429 carrying one retry hint; the
        retry must come no sooner than the hint says (the broker's own
        backoff here is at most 50 ms, so an unparsed hint shows)."""
        c, s = self.c, self.scripted
        n = 8
        batches = {}
        for kind in ("s", "d", "m"):
            inp = harness.gen_batch(c.path(f"ra{kind}.jsonl"), n, prefix=f"ra{kind}-")
            batches[kind] = c.llmq("submit", inp, "--quiet", "--upstream", f"ra{kind}",
                                   "--max-attempts", "3", check=0).stdout.strip()
        for kind, b in batches.items():
            c.llmq("wait", b, "--quiet", check=0, timeout=60)
            c.llmq("results", b, "-o", c.path(f"ra{kind}.out"), "--quiet", check=0)
            lines = harness.read_jsonl(c.path(f"ra{kind}.out"))
            self.assertEqual(len(lines), n)
            self.assertTrue(all(x["error"] is None for x in lines), kind)
        for kind in ("s", "d", "m"):
            gaps, early = [], []
            for i in range(n):
                t = s.times[f"ra{kind}-{i}"]
                self.assertEqual(len(t), 2, f"ra{kind}-{i}: one 429, then one success")
                gaps.append(t[1] - t[0])
                # how long the hint asked for, from the 429
                lo = {"s": s.HINT_S, "m": s.HINT_MS / 1000,
                      "d": int(t[0]) + s.HINT_D - t[0]}[kind]  # not before the date
                early.append(t[1] - t[0] - lo)
            print(f"\nretry hint {kind}: retried {min(gaps):.2f}..{max(gaps):.2f}s after the "
                  f"429, {min(early):+.2f}..{max(early):+.2f}s from the hint", file=sys.stderr)
            self.assertGreaterEqual(min(early), -0.05, f"{kind}: retried before the hint")
            # The first retry comes right at the hint (a whole-second date
            # may be read up to 1 s long): the hint was not read as longer.
            self.assertLessEqual(min(early), 1.5 if kind == "d" else 0.5,
                                 f"{kind}: retried much later than the hint")
            # The others follow at the broker's pace: after a 429 with no
            # success yet it restarts at 1/s and grows 50% per 100 ms.
            self.assertLessEqual(max(early), 3.0, f"{kind}: retries straggled")

    # ---- 5xx ----
    def test_5xx_retried_then_ok_and_always_500_uses_max_attempts(self):
        c = self.c
        inp = harness.gen_batch(c.path("flaky.jsonl"), 300, prefix="flaky-")
        harness.gen_batch(c.path("doomed.jsonl"), 3, prefix="doomed-")
        with open(inp, "a") as f, open(c.path("doomed.jsonl")) as g:
            f.write(g.read())
        out = c.path("flaky.out")
        c.llmq("run", inp, "-o", out, "--quiet", "--upstream", "flaky", "--max-attempts", "4",
               check=3, timeout=60)
        lines = harness.read_jsonl(out)
        self.assertEqual(len(lines), 303)
        counts = fake_get(self.ports["flaky"], "/counts")
        stats = fake_get(self.ports["flaky"], "/stats")
        self.assertGreater(stats["by_status"].get("500", 0), 3 * 4)
        self.assertGreater(stats["by_status"].get("503", 0), 0)
        ok = [x for x in lines[:300] if x["error"] is None]
        # With p(fail) = 0.4 and 4 attempts, a job fails 4 times with
        # probability 2.6%: allow a few, but most were retried to success.
        self.assertGreaterEqual(len(ok), 280)
        retried_ok = sum(1 for x in ok if counts[x["custom_id"]] > 1)
        self.assertGreater(retried_ok, 50, "5xx were retried and then succeeded")
        for x in lines[:300]:
            if x["error"] is not None:
                self.assertIn(x["error"]["code"], ("http_500", "http_503"))
                self.assertEqual(counts[x["custom_id"]], 4)
        for x in lines[300:]:
            self.assertEqual(x["error"]["code"], "http_500")
            self.assertEqual(x["response"]["status_code"], 500)
            self.assertEqual(counts[x["custom_id"]], 4, "exactly --max-attempts requests")
        st = c.status(batch_of(lines))
        self.assertEqual(st["request_counts"]["failed"], 300 - len(ok) + 3)

    # ---- timeouts ----
    def test_hung_request_cut_by_timeout_then_retried(self):
        n = 100
        lines, wall = self.run_batch(n, "hang-", "hang", "--timeout", "1", "--max-attempts",
                                     "10")
        self.assertTrue(all(x["error"] is None for x in lines))
        stats = fake_get(self.ports["hang"], "/stats")
        self.assertGreater(stats["hung"], 5)
        # Every job starts at once (concurrency 300); a hung attempt costs
        # ~1 s, so even a job that hung three times in a row ends in ~3 s.
        self.assertLess(wall, 6.0, f"took {wall:.1f}s")

    def test_every_attempt_hangs_fails_with_timeout(self):
        n = 5
        lines, wall = self.run_batch(n, "hangall-", "hangall", "--timeout", "1",
                                     "--max-attempts", "2", check=3)
        for x in lines:
            self.assertEqual(x["error"]["code"], "timeout")
            self.assertIsNone(x.get("response"))
        counts = fake_get(self.ports["hangall"], "/counts")
        self.assertEqual(sorted(counts.values()), [2] * n)
        # two attempts of ~1 s each, plus client start-up and polling; not 600 s
        self.assertGreater(wall, 1.9)
        self.assertLess(wall, 4.5, f"took {wall:.1f}s")

    # ---- connections ----
    def test_dropped_connection_retried(self):
        n = 200
        lines, _ = self.run_batch(n, "drop-", "drop", "--max-attempts", "10")
        self.assertTrue(all(x["error"] is None for x in lines))
        stats = fake_get(self.ports["drop"], "/stats")
        self.assertGreater(stats["dropped"], 20)
        self.assertEqual(stats["by_status"].get("200", 0), n)

    def test_refused_connection_fails_with_connection_error(self):
        n = 4
        lines, _ = self.run_batch(n, "dead-", "dead", "--max-attempts", "3", check=3)
        for x in lines:
            self.assertEqual(x["error"]["code"], "connection_error")
            self.assertTrue(x["error"]["message"])
        # the final result records the attempt that produced it: 'F' attempt '|' line
        res = self.c.redis_cli("HVALS", f"llmq:b:{batch_of(lines)}:res").splitlines()
        self.assertEqual([v.split("|", 1)[0] for v in res], ["F3"] * n,
                         "exactly --max-attempts attempts")
        self.assertEqual(self.c.status(batch_of(lines))["llmq"]["retried"], 2 * n)

    # ---- final at once ----
    def test_400_is_final_at_once(self):
        c = self.c
        n = 10
        lines, _ = self.run_batch(n, "bad-", "flaky", "--max-attempts", "5", check=3)
        counts = fake_get(self.ports["flaky"], "/counts")
        for x in lines:
            self.assertEqual(x["error"]["code"], "http_400")
            self.assertEqual(x["response"]["status_code"], 400)
            self.assertIn("bad-request-prefix", x["error"]["message"])
            self.assertEqual(counts[x["custom_id"]], 1, "a 400 is not retried")
        st = c.status(batch_of(lines))
        self.assertEqual(st["llmq"]["retried"], 0)

    def test_oversized_body_is_final(self):
        n = 5
        lines, _ = self.run_batch(n, "big-", "big", "--max-attempts", "5", check=3)
        counts = fake_get(self.ports["big"], "/counts")
        for x in lines:
            self.assertEqual(x["error"]["code"], "response_too_large")
            self.assertEqual(counts[x["custom_id"]], 1, "final: not retried")
        self.assertEqual(sum(counts.values()), n)


class ApiKey(SharedClusterTest):
    """fake --api-key SECRET; the worker gets the key from LLMQ_API_KEY, from
    LLMQ_API_KEY_FILE, or a wrong one."""
    SECRET = "sk-llmq-test-7f3a9c1e5b2d4680SECRET"
    WRONG = "sk-llmq-test-wrong-0000000000WRONGKEY"

    @classmethod
    def setUpClass(cls):
        cls.c = c = harness.Cluster(workers=0, concurrency=50, start=False,
                                    broker_args=BROKER_FAST,
                                    fake_args=["--api-key", cls.SECRET, "--log-level", "debug"])
        try:
            c.start_redis()
            c.start_fake()
            c.start_broker()
        except BaseException:
            c.close()
            raise

    def one_worker(self, env):
        """Starts one worker with env (the previous one is drained away)."""
        c = self.c
        for w in c.workers:
            if w.alive():
                self.assertEqual(w.stop(), 0)
        w = c.start_worker(extra=["--log-level", "debug", "--heartbeat-ms", "300"],
                           env_extra=env)
        c.wait_workers(1)
        return w

    def check_no_leak(self, worker, secret):
        """The key is on no command line, in no log, Redis or output file."""
        c = self.c
        s = secret.encode()
        with open(f"/proc/{worker.p.pid}/cmdline", "rb") as f:
            self.assertNotIn(s, f.read())
        ps = subprocess.run(["ps", "-ef"], capture_output=True, text=True).stdout
        ps = "\n".join(line for line in ps.splitlines()
                       if "llmq-fake-upstream" not in line)  # the provider's own flag
        self.assertNotIn(secret, ps)
        c.redis_cli("SAVE")
        keys = c.redis_cli("--scan").split()
        self.assertTrue(keys)
        for k in keys:
            self.assertNotIn(secret, k)
            typ = c.redis_cli("TYPE", k).strip()
            if typ == "none":
                continue
            val = {"hash": ("HGETALL",), "list": ("LRANGE", "0", "-1"),
                   "zset": ("ZRANGE", "0", "-1", "WITHSCORES"), "set": ("SMEMBERS",),
                   "string": ("GET",)}[typ]
            self.assertNotIn(secret, c.redis_cli(val[0], k, *val[1:]), k)
        for name in os.listdir(c.dir):  # every log, the Redis dump, inputs and outputs
            with open(c.path(name), "rb") as f:
                self.assertNotIn(s, f.read(), f"the key leaked into {name}")
        self.assertTrue(os.path.exists(c.path("dump.rdb")))

    def test_key_from_env(self):
        w = self.one_worker({"LLMQ_API_KEY": self.SECRET})
        lines, _ = self.run_batch(30, "env-", None)
        self.assertTrue(all(x["error"] is None for x in lines))
        self.check_no_leak(w, self.SECRET)
        self.assertIn("API key set", self.c.tail(os.path.basename(w.log_path), 200))

    def test_key_from_file_with_trailing_newline(self):
        key_file = self.c.path("secret-key")  # not "*.log": check_no_leak skips nothing
        with open(key_file, "w") as f:
            f.write(self.SECRET + "\n")
        os.chmod(key_file, 0o600)
        env = {"LLMQ_API_KEY_FILE": key_file}
        w = self.one_worker(env)
        try:
            lines, _ = self.run_batch(30, "file-", None)
            self.assertTrue(all(x["error"] is None for x in lines))
            with open(f"/proc/{w.p.pid}/environ", "rb") as f:
                self.assertNotIn(self.SECRET.encode(), f.read(), "a key file keeps env clean")
            os.unlink(key_file)
            self.check_no_leak(w, self.SECRET)
        finally:
            if os.path.exists(key_file):
                os.unlink(key_file)

    def test_wrong_key_is_final_401(self):
        w = self.one_worker({"LLMQ_API_KEY": self.WRONG})
        before = self.c.fake_get("/stats")["auth_failed"]
        lines, _ = self.run_batch(10, "wrong-", None, "--max-attempts", "5", check=3)
        counts = self.c.fake_get("/counts")
        for x in lines:
            self.assertEqual(x["error"]["code"], "http_401")
            self.assertEqual(x["response"]["status_code"], 401)
            self.assertEqual(counts[x["custom_id"]], 1, "a 401 is final at once")
        self.assertEqual(self.c.fake_get("/stats")["auth_failed"] - before, 10)
        self.check_no_leak(w, self.WRONG)
        self.check_no_leak(w, self.SECRET)


class Drain(SharedClusterTest):
    """One worker holding 20 slow (2 s) requests is sent SIGTERM."""
    N, CONC, LAT = 50, 20, 2000

    @classmethod
    def setUpClass(cls):
        cls.c = c = harness.Cluster(workers=0, concurrency=cls.CONC, start=False,
                                    broker_args=BROKER_FAST,
                                    fake_args=["--latency-ms", str(cls.LAT)],
                                    worker_args=["--heartbeat-ms", "300", "--drain-timeout",
                                                 "10"])
        try:
            c.start_redis()
            c.start_fake()
            c.start_broker()
        except BaseException:
            c.close()
            raise

    def wait_inflight(self, n, timeout=10):
        self.c._wait(lambda: self.c.fake_get("/stats")["inflight"] >= n,
                     f"{n} requests in flight", timeout)

    def test_1_sigterm_drains_then_second_worker_finishes(self):
        c = self.c
        w0 = c.start_worker()
        c.wait_workers(1)
        inp = harness.gen_batch(c.path("drain.jsonl"), self.N, prefix="drain-")
        batch = c.llmq("submit", inp, "--quiet", check=0).stdout.strip()
        # All 20 requests reach the upstream at once (not one after another
        # behind the first response, as with CURLOPT_PIPEWAIT on http://).
        self.wait_inflight(self.CONC, timeout=0.8 * self.LAT / 1000)
        t0 = time.time()
        w0.signal(signal.SIGTERM)
        rc = w0.p.wait(15)
        drain_s = time.time() - t0
        self.assertEqual(rc, 0, "a drained worker exits 0")
        self.assertLess(drain_s, self.LAT / 1000 + 2.0, "exits once its requests are done")
        log = c.tail(os.path.basename(w0.log_path), 100)
        self.assertIn("draining", log)
        self.assertIn("drain complete", log)
        stats = c.fake_get("/stats")
        self.assertEqual(stats["inflight"], 0, "nothing abandoned mid-request")
        self.assertEqual(stats["requests"], self.CONC, "no new work taken while draining")
        st = c.status(batch)
        self.assertEqual(st["request_counts"]["completed"], self.CONC,
                         "every in-flight request was delivered and recorded")
        counts = c.fake_get("/counts")
        self.assertEqual(sorted(counts.values()), [1] * self.CONC)
        # A second worker picks up the rest.
        c.start_worker()
        c.llmq("wait", batch, "--quiet", check=0, timeout=60)
        c.llmq("results", batch, "-o", c.path("drain.out"), "--quiet", check=0)
        lines = harness.read_jsonl(c.path("drain.out"))
        self.assertEqual([x["custom_id"] for x in lines], [f"drain-{i}" for i in range(self.N)])
        self.assertTrue(all(x["error"] is None for x in lines))
        counts = c.fake_get("/counts")
        self.assertEqual(len(counts), self.N)
        self.assertEqual(set(counts.values()), {1}, "every job executed exactly once")
        self.assertEqual(c.status(batch)["llmq"]["duplicates"], 0)

    def test_2_second_sigterm_exits_at_once(self):
        c = self.c
        for w in c.workers:
            if w.alive():
                self.assertEqual(w.stop(), 0)
        w = c.start_worker()
        c.wait_workers(1)
        base = c.fake_get("/stats")["requests"]
        inp = harness.gen_batch(c.path("twice.jsonl"), self.CONC, prefix="twice-")
        batch = c.llmq("submit", inp, "--quiet", check=0).stdout.strip()
        c._wait(lambda: c.fake_get("/stats")["requests"] - base >= self.CONC,
                "requests in flight")
        w.signal(signal.SIGTERM)
        time.sleep(0.3)
        self.assertTrue(w.alive(), "the first SIGTERM drains")
        t0 = time.time()
        w.signal(signal.SIGTERM)
        rc = w.p.wait(5)
        self.assertLess(time.time() - t0, 0.5, "the second SIGTERM exits at once")
        self.assertEqual(rc, 130)
        w.killed = True  # exited 130 on purpose
        self.assertIn("second signal", c.tail(os.path.basename(w.log_path), 20))
        # The abandoned jobs go back to the queue (the broker notices the
        # silent worker) and another worker runs them: one result each.
        c.start_worker()
        c.llmq("wait", batch, "--quiet", check=0, timeout=60)
        c.llmq("results", batch, "-o", c.path("twice.out"), "--quiet", check=0)
        lines = harness.read_jsonl(c.path("twice.out"))
        self.assertEqual(len(lines), self.CONC)
        self.assertTrue(all(x["error"] is None for x in lines))


if __name__ == "__main__":
    harness.main()
