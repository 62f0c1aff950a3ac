"""The client CLI (`llmq`) against a real cluster: bad input is refused with
FILE:LINE[:COLUMN] and stores nothing (guarantee 9), exit statuses of the
contract, byte-exact JSONL output in input order, --errors, --prompts,
--json shapes, run --name idempotence, cancel, wait's log lines and Ctrl-C.

Two clusters for the whole file, one per class: a fast fake upstream
(ClientFast) and a slow one for what has to be caught mid-way (ClientSlow).
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

GOOD = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}


def jline(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def good(cid):
    d = json.loads(json.dumps(GOOD))
    d["custom_id"] = cid
    d["body"]["metadata"] = {"custom_id": cid}
    return jline(d)


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _ClassCluster(unittest.TestCase):
    """One cluster per class; logs are printed when a test fails."""
    cluster_args = {}

    @classmethod
    def setUpClass(cls):
        cls.c = harness.Cluster(**cls.cluster_args)

    @classmethod
    def tearDownClass(cls):
        cls.c.close()

    def tearDown(self):
        result = getattr(getattr(self, "_outcome", None), "result", None)
        if result is not None and any(
                t is self for t, _ in list(result.failures) + list(result.errors)):
            for name in ("broker.log", "worker0.log", "fake.log"):
                print(f"---- {name} ----\n{self.c.tail(name)}", file=sys.stderr)

    def write(self, name, data):
        p = self.c.path(name)
        with open(p, "wb") as f:
            f.write(data)
        return p

    def batch_ids(self):
        r = self.c.llmq("list", "--json", check=0)
        return sorted(b["id"] for b in json.loads(r.stdout)["data"])


class ClientFast(_ClassCluster):
    cluster_args = dict(workers=2, concurrency=100, fake_args=["--bad-request-prefix", "bad-"])

    # ---- bad input: FILE:LINE[:COL], exit 1, nothing stored ----

    def assert_refused(self, name, data, where, text, cmd="submit", extra=()):
        """Submits (or runs) a bad file: exit 1, stderr names FILE:LINE[:COL]
        (where: "2:31", "2" or "" for a file-wide error) and `text`, stdout
        empty, no batch and no Redis key created, no output file."""
        path = self.write(name, data) if data is not None else self.c.path(name)
        before, keys = self.batch_ids(), self.c.redis_cli("dbsize").strip()
        out = self.c.path(name + ".out")
        args = [cmd, path, *extra] + (["-o", out] if cmd == "run" else [])
        r = self.c.llmq(*args)
        self.assertEqual(r.returncode, 1, f"{args}: {r.stderr}")
        self.assertEqual(r.stdout, "", "no batch id printed")
        if where.endswith(":"):  # any column
            self.assertRegex(r.stderr, re.escape(f"{path}:{where}") + r"\d+: ")
        else:
            self.assertIn(f"{path}:{where}: " if where else f"{path}: ", r.stderr)
        self.assertIn(text, r.stderr)
        if where:
            self.assertIn("nothing was submitted", r.stderr)
        self.assertEqual(self.batch_ids(), before, "a refused file must not create a batch")
        self.assertEqual(self.c.redis_cli("dbsize").strip(), keys, "nothing stored in Redis")
        self.assertFalse(os.path.exists(out) or os.path.exists(out + ".part"))
        return r

    def test_bad_json_line_and_column(self):
        # 'POST' without quotes: jansson points at the end of the token (col 31)
        r = self.assert_refused("badjson.jsonl", good("a") + b'{"custom_id":"b", "method":POST}\n',
                                "2:31", "invalid JSON")
        # columns count characters, not bytes: two 2-byte characters before
        # the 'x' at column 20 (22 in bytes)
        self.assert_refused("badjson8.jsonl", good("a") + '{"custom_id":"éé", x}\n'.encode(),
                            "2:20", "invalid JSON")
        # truncated last line (no newline at the end)
        self.assert_refused("trunc.jsonl", good("a") + good("b")[:40], "2:", "invalid JSON")
        self.assertIn("1 invalid line;", r.stderr)

    def test_not_an_object(self):
        self.assert_refused("arr.jsonl", good("a") + b"[1,2]\n", "2", "not a JSON object")
        self.assert_refused("str.jsonl", b'"just a string"\n' + good("a"), "1",
                            "not a JSON object")

    def test_custom_id_missing_and_duplicate(self):
        self.assert_refused("noid.jsonl", good("a") + b'{"method":"POST","url":"/v1/x","body":{}}\n',
                            "2", 'missing "custom_id"')
        r = self.assert_refused("dup.jsonl", good("a") + good("b") + good("a"), "3",
                                'duplicate custom_id "a"')
        self.assertIn("line 1", r.stderr, "the duplicate message names both lines")

    def test_method_url_body(self):
        get = good("a").replace(b'"POST"', b'"GET"')
        self.assert_refused("get.jsonl", get, "1", '"method" must be "POST"')
        self.assert_refused("nourl.jsonl", b'{"custom_id":"a","method":"POST","body":{}}\n', "1",
                            'missing "url"')
        self.assert_refused("bodystr.jsonl",
                            b'{"custom_id":"a","method":"POST","url":"/v1/x","body":"s"}\n', "1",
                            '"body" must be a JSON object')
        self.assert_refused("nobody.jsonl",
                            b'{"custom_id":"a","method":"POST","url":"/v1/x"}\n', "1", '"body"')

    def test_line_over_the_limit(self):
        # default limit: a 4 MiB body + 64 KiB of envelope
        big = (b'{"custom_id":"big","method":"POST","url":"/v1/x","body":{"x":"'
               + b"a" * (4 * 1024 * 1024 + 64 * 1024) + b'"}}\n')
        r = self.assert_refused("long.jsonl", good("a") + big + good("c"), "2", "line too long")
        # lines after a long one keep their true numbers
        self.assert_refused("long2.jsonl", good("a") + big + b"[]\n", "3", "not a JSON object")
        self.assertNotIn(":3:", r.stderr)

    def test_invalid_utf8(self):
        bad = b'{"custom_id":"\xff","method":"POST","url":"/v1/x","body":{}}\n'
        self.assert_refused("utf8.jsonl", good("a") + bad, "2:15", "invalid UTF-8")
        # in a prompts file too
        path = self.write("utf8.txt", b"fine\n\nab\xc3(\n")
        before = self.batch_ids()
        r = self.c.llmq("submit", "--prompts", path, "--model", "m")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(f"{path}:3:3: invalid UTF-8", r.stderr)
        self.assertEqual(self.batch_ids(), before)

    def test_empty_missing_blank(self):
        self.assert_refused("empty.jsonl", b"", "", "empty")
        self.assert_refused("blanks.jsonl", b"\n  \n\n", "", "empty")
        self.assert_refused("missing.jsonl", None, "", "No such file")
        self.assert_refused("blank.jsonl", good("a") + b"\n" + good("b"), "2", "empty line")
        self.assert_refused("ws.jsonl", good("a") + b"  \t\n" + good("b"), "2", "empty line")

    def test_run_refuses_too(self):
        self.assert_refused("run.jsonl", good("a") + b"{\n", "2:", "invalid JSON", cmd="run")

    def test_every_bad_line_listed(self):
        data = good("a") + b"[]\n" + good("b") + b"{x\n" + good("a")
        r = self.assert_refused("many.jsonl", data, "2", "not a JSON object")
        path = self.c.path("many.jsonl")
        self.assertIn(f"{path}:4:2: invalid JSON", r.stderr)
        self.assertIn(f"{path}:5: duplicate", r.stderr)
        self.assertIn("3 invalid lines;", r.stderr)

    def test_accepted_variants(self):
        """CRLF endings, a BOM, no final newline, trailing blank lines: fine."""
        data = b"\xef\xbb\xbf" + good("v1").replace(b"\n", b"\r\n") + good("v2") + good("v3")[:-1]
        data += b"\n\n  \n"
        path = self.write("variants.jsonl", data)
        out = self.c.path("variants.out")
        self.c.llmq("run", path, "-o", out, "--quiet", check=0)
        self.assertEqual([x["custom_id"] for x in harness.read_jsonl(out)], ["v1", "v2", "v3"])

    # ---- exit statuses ----

    def test_exit_codes(self):
        ok = harness.gen_batch(self.c.path("ok.jsonl"), 30, prefix="ok-")
        r = self.c.llmq("run", ok, "-o", self.c.path("ok.out"), check=0)
        self.assertRegex(r.stdout.strip(), r"^batch_\w+$")
        self.assertEqual(self.c.llmq("wait", r.stdout.strip()).returncode, 0)
        mixed = self.write("mixed.jsonl", good("m1") + good("bad-1") + good("m2"))
        r = self.c.llmq("run", mixed, "-o", self.c.path("mixed.out"), check=3)
        self.assertEqual(self.c.llmq("wait", r.stdout.strip()).returncode, 3)
        self.assertEqual(self.c.llmq("results", r.stdout.strip(), "-o",
                                     self.c.path("m2.out")).returncode, 3)
        # bad usage
        for args, msg in ((["frob"], "unknown command 'frob'"),
                          (["run", ok], "run needs -o OUT"),
                          (["results", "batch_x"], "needs -o OUT"),
                          (["submit"], "needs a FILE"),
                          (["wait"], "needs a BATCH"),
                          (["submit", ok, "--max-attempts", "0"], "--max-attempts"),
                          (["submit", ok, "--bogus"], "unknown option '--bogus'"),
                          (["submit", "--prompts", ok], "--prompts needs --model"),
                          (["status", "batch_nope"], "no such batch"),
                          (["wait", "batch_nope"], "no such batch"),
                          (["results", "batch_nope", "-o", self.c.path("nope.out")],
                           "no such batch"),
                          ([], "usage")):
            r = self.c.llmq(*args)
            self.assertEqual(r.returncode, 1, f"{args}: {r.stderr}")
            self.assertIn(msg, r.stderr, args)
        self.assertEqual(self.c.llmq("--help").returncode, 0)
        self.assertFalse(os.path.exists(self.c.path("nope.out")))

    def test_broker_unreachable_exits_2_within_connect_timeout(self):
        ok = harness.gen_batch(self.c.path("unreach.jsonl"), 5)
        out = self.c.path("unreach.out")
        env = dict(os.environ, LLMQ_BROKER=f"tcp://127.0.0.1:{closed_port()}")
        cmds = [["status", "batch_x"], ["wait", "batch_x"], ["results", "batch_x", "-o", out],
                ["cancel", "batch_x"], ["list"], ["workers", "--json"], ["submit", ok],
                ["run", ok, "-o", out]]
        procs = []
        for args in cmds:
            t0 = time.monotonic()
            p = subprocess.Popen([os.path.join(harness.BIN, "llmq"), *args, "--connect-timeout", "1"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=env, stdin=subprocess.DEVNULL)
            procs.append((args, t0, p))
        # the environment variable works as well as the flag
        t0 = time.monotonic()
        p = subprocess.Popen([os.path.join(harness.BIN, "llmq"), "list"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                             env=dict(env, LLMQ_CONNECT_TIMEOUT="1"))
        procs.append((["list (LLMQ_CONNECT_TIMEOUT=1)"], t0, p))
        for args, t0, p in procs:
            o, e = p.communicate(timeout=30)
            took = time.monotonic() - t0
            self.assertEqual(p.returncode, 2, f"{args}: {e}")
            self.assertLess(took, 1 + 2, f"{args} took {took:.1f}s")
            self.assertIn("unreachable", e, args)
            self.assertEqual(o, "", args)
        self.assertFalse(os.path.exists(out) or os.path.exists(out + ".part"))

    # ---- output ----

    def test_output_is_exact_jsonl_in_input_order(self):
        specials = ['q"uote', "back\\slash", "uni-é-😀", "slash/x", "sep\u2028x", "tab\tx"]
        ids = []
        for i in range(2300):  # > 2 submit chunks and > 2 result pages of 1000
            if i < len(specials):
                ids.append(specials[i])
            elif i % 10 == 3:
                ids.append(f"bad-{i}")
            else:
                ids.append(f"o-{i}")
        ids.append("bad-\u00e9")
        inp = self.write("order.jsonl", b"".join(good(x) for x in ids))
        out, err = self.c.path("order.out"), self.c.path("order.err")
        r = self.c.llmq("run", inp, "-o", out, "--quiet", check=3)
        batch = r.stdout.strip()
        with open(out, "rb") as f:
            raw = f.read()
        self.assertTrue(raw.endswith(b"\n"))
        self.assertNotIn(b"\r", raw)
        raw_lines = raw[:-1].split(b"\n")
        self.assertEqual(len(raw_lines), len(ids), "one output line per input line")
        lines = [json.loads(x.decode("utf-8", errors="strict")) for x in raw_lines]
        self.assertEqual([x["custom_id"] for x in lines], ids, "input order")
        self.assertEqual(len({x["id"] for x in lines}), len(ids))
        nfailed = 0
        for x in lines:
            self.assertEqual(set(x), {"id", "custom_id", "response", "error"})
            self.assertTrue(x["id"].startswith("batch_req_"))
            resp = x["response"]
            self.assertTrue(resp["request_id"])
            self.assertIsInstance(resp["body"], dict)
            if x["custom_id"].startswith("bad-"):
                nfailed += 1
                self.assertEqual(set(x["error"]), {"code", "message"})
                self.assertEqual(x["error"]["code"], "http_400")
                self.assertTrue(x["error"]["message"])
                self.assertEqual(resp["status_code"], 400, "the last response is kept")
                self.assertIn("error", resp["body"])
            else:
                self.assertIsNone(x["error"])
                self.assertEqual(resp["status_code"], 200)
                self.assertEqual(resp["body"]["choices"][0]["message"]["content"],
                                 "echo:" + x["custom_id"])
        st = self.c.status(batch)
        self.assertEqual(st["request_counts"],
                         {"total": len(ids), "completed": len(ids) - nfailed, "failed": nfailed})
        # --errors: failed jobs go to ERR, both files keep input order, same bytes
        r = self.c.llmq("results", batch, "-o", out + "2", "--errors", err, check=3)
        self.assertIn(f"wrote {len(ids)} results ({nfailed} failed)", r.stderr)
        with open(out + "2", "rb") as f:
            ok_raw = f.read()
        with open(err, "rb") as f:
            err_raw = f.read()
        want_ok = b"".join(x + b"\n" for x, y in zip(raw_lines, lines) if y["error"] is None)
        want_err = b"".join(x + b"\n" for x, y in zip(raw_lines, lines) if y["error"])
        self.assertEqual(ok_raw, want_ok)
        self.assertEqual(err_raw, want_err)
        # -o - writes the same bytes to stdout; no .part file is left anywhere
        r = subprocess.run([os.path.join(harness.BIN, "llmq"), "results", batch, "-o", "-",
                            "--quiet"], capture_output=True, timeout=60,
                           env=dict(os.environ, LLMQ_BROKER=self.c.front))
        self.assertEqual(r.returncode, 3)
        self.assertEqual(r.stdout, raw)
        self.assertEqual([f for f in os.listdir(self.c.dir) if f.endswith(".part")], [])

    def test_results_overwrites_atomically(self):
        inp = harness.gen_batch(self.c.path("atomic.jsonl"), 50, prefix="at-")
        out = self.write("atomic.out", b"old content that must go\n" * 1000)
        self.c.llmq("run", inp, "-o", out, "--quiet", check=0)
        self.assertEqual(len(harness.read_jsonl(out)), 50)
        self.assertFalse(os.path.exists(out + ".part"))

    # ---- --prompts ----

    def test_prompts_file(self):
        lines = ["Hello there", "", "   ", 'Ünïcödé with "quotes" and \\ backslash 😀', "",
                 "last line without a newline"]
        path = self.write("prompts.txt", "\n".join(lines).encode())
        model, system, max_tokens = "my-model-x", "You are terse.", 7
        out = self.c.path("prompts.out")
        r = self.c.llmq("run", "--prompts", path, "--model", model, "--system", system,
                        "--max-tokens", str(max_tokens), "-o", out, "--quiet", check=0)
        batch = r.stdout.strip()
        res = harness.read_jsonl(out)
        want = [(i + 1, p) for i, p in enumerate(lines) if p.strip()]
        self.assertEqual([x["custom_id"] for x in res], [f"line-{n}" for n, _ in want],
                         "custom_ids carry the true line numbers; blank lines skipped")
        counts = self.c.fake_get("/counts")
        for x, (n, prompt) in zip(res, want):
            body = x["response"]["body"]
            self.assertEqual(body["model"], model, "the fake echoes the request's model")
            usage = body["usage"]
            # (the fake counts UTF-8 bytes of the message contents)
            self.assertEqual(usage["prompt_tokens"],
                             (len(system.encode()) + len(prompt.encode()) + 3) // 4,
                             "system + prompt reached the upstream")
            self.assertEqual(usage["completion_tokens"], max_tokens)
            # the fake counts a request without metadata.custom_id under the
            # FNV-1a of its body: the exact request body reached it, once
            req = {"model": model, "messages": [{"role": "system", "content": system},
                                                {"role": "user", "content": prompt}],
                   "max_tokens": max_tokens}
            key = "%016x" % fnv1a64(jline(req)[:-1])
            self.assertEqual(counts.get(key), 1, f"line {n}: body {jline(req)!r}")
        self.assertEqual(self.c.status(batch)["request_counts"]["total"], len(want))
        # no --system, no --max-tokens: neither is in the body
        path2 = self.write("prompts2.txt", b"just one\n")
        r = self.c.llmq("submit", "--prompts", path2, "--model", "m2", check=0)
        b2 = r.stdout.strip()
        self.c.llmq("wait", b2, "--quiet", check=0)
        key = "%016x" % fnv1a64(jline({"model": "m2", "messages": [
            {"role": "user", "content": "just one"}]})[:-1])
        self.assertEqual(self.c.fake_get("/counts").get(key), 1)

    # ---- status / list / workers --json ----

    def test_json_shapes(self):
        inp = harness.gen_batch(self.c.path("shape.jsonl"), 20, prefix="sh-")
        batch = self.c.llmq("run", inp, "-o", self.c.path("shape.out"), "--name", "shape",
                            "--quiet", check=0).stdout.strip()
        st = self.c.status(batch)
        self.assertEqual(st["id"], batch)
        self.assertEqual(st["object"], "batch")
        self.assertEqual(st["status"], "completed")
        self.assertEqual(st["request_counts"], {"total": 20, "completed": 20, "failed": 0})
        self.assertEqual(set(st["usage"]), {"prompt_tokens", "completion_tokens", "total_tokens"})
        self.assertEqual(st["usage"]["total_tokens"],
                         st["usage"]["prompt_tokens"] + st["usage"]["completion_tokens"])
        self.assertGreater(st["usage"]["completion_tokens"], 0)
        self.assertIsInstance(st["created_at"], int)
        self.assertGreaterEqual(st["completed_at"], st["created_at"])
        self.assertIsNone(st["cancelled_at"])
        self.assertEqual(st["metadata"], {"name": "shape"})
        # text form
        r = self.c.llmq("status", batch, check=0)
        self.assertIn(batch, r.stdout)
        self.assertIn("completed", r.stdout)
        # list --json: an OpenAI list of the same objects
        lst = json.loads(self.c.llmq("list", "--json", check=0).stdout)
        self.assertEqual(lst["object"], "list")
        mine = [b for b in lst["data"] if b["id"] == batch]
        self.assertEqual(len(mine), 1)
        self.assertEqual(mine[0]["request_counts"], st["request_counts"])
        self.assertIn(batch, self.c.llmq("list", check=0).stdout)
        # workers --json
        ws = json.loads(self.c.llmq("workers", "--json", check=0).stdout)
        if isinstance(ws, dict):  # {"workers": [...], "upstreams": [...]}
            self.assertIsInstance(ws.get("upstreams", []), list)
            ws = ws["workers"]
        self.assertEqual(len(ws), 2)
        for w in ws:
            self.assertTrue(w["id"])
            self.assertEqual(w["concurrency"], 100)
            for k in ("in_flight", "credit", "completed", "last_seen_ms"):
                self.assertIsInstance(w[k], int)
        self.assertGreaterEqual(sum(w["completed"] for w in ws), 20)

    # ---- run --name ----

    def test_run_name_twice_same_batch_no_resubmit(self):
        inp = harness.gen_batch(self.c.path("named.jsonl"), 1500, prefix="named-")
        out1, out2 = self.c.path("named1.out"), self.c.path("named2.out")
        r1 = self.c.llmq("run", "--name", "nightly-1", inp, "-o", out1, check=0)
        r2 = self.c.llmq("run", "--name", "nightly-1", inp, "-o", out2, check=0)
        self.assertEqual(r1.stdout.strip(), r2.stdout.strip())
        self.assertIn("resuming batch", r2.stderr)
        with open(out1, "rb") as f, open(out2, "rb") as g:
            self.assertEqual(f.read(), g.read())
        counts = self.c.fake_get("/counts")
        mine = {k: v for k, v in counts.items() if k.startswith("named-")}
        self.assertEqual(len(mine), 1500)
        self.assertEqual(set(mine.values()), {1}, "the second run must not submit again")
        # submit --name also finds it
        r3 = self.c.llmq("submit", "--name", "nightly-1", inp, check=0)
        self.assertEqual(r3.stdout.strip(), r1.stdout.strip())
        self.assertEqual(sum(1 for b in json.loads(
            self.c.llmq("list", "--json", check=0).stdout)["data"]
            if b["metadata"].get("name") == "nightly-1"), 1)

    # The same --name with a different file is refused (the batch keeps a
    # fingerprint of its input), instead of handing back the old results.
    def test_run_name_with_a_different_file_is_refused(self):
        a = harness.gen_batch(self.c.path("na.jsonl"), 10, prefix="na-")
        b = harness.gen_batch(self.c.path("nb.jsonl"), 20, prefix="nb-")
        self.c.llmq("run", "--name", "reused", a, "-o", self.c.path("na.out"), check=0)
        r = self.c.llmq("run", "--name", "reused", b, "-o", self.c.path("nb.out"))
        self.assertEqual(r.returncode, 1, "a name reused for another file must be refused")
        self.assertIn("--name", r.stderr)
        self.assertFalse(os.path.exists(self.c.path("nb.out")))

    def test_wait_log_lines_when_finished(self):
        inp = harness.gen_batch(self.c.path("w.jsonl"), 10, prefix="w-")
        batch = self.c.llmq("run", inp, "-o", self.c.path("w.out"), "--quiet",
                            check=0).stdout.strip()
        r = self.c.llmq("wait", batch, check=0)
        self.assertEqual(r.stdout, "")
        self.assertRegex(r.stderr, rf"^llmq: {batch} completed 10/10 \(100\.0%\) \S+ jobs/s "
                                   r"eta \S+ failed 0 retried 0\n$")


class ClientSlow(_ClassCluster):
    """A fake that answers after 2 s and one worker holding 4 requests:
    2 jobs/s, so batches can be caught in the middle."""
    cluster_args = dict(workers=1, concurrency=4, fake_args=["--latency-ms", "2000"])

    def submit(self, n, prefix, *extra):
        inp = harness.gen_batch(self.c.path(prefix + "in.jsonl"), n, prefix=prefix)
        return self.c.llmq("submit", inp, *extra, check=0).stdout.strip()

    def bg(self, *args):
        """Starts llmq with stderr to a file (not a tty). Returns (proc, errpath)."""
        errpath = self.c.path(f"bg-{time.monotonic_ns()}.err")
        errf = open(errpath, "w")
        p = subprocess.Popen([os.path.join(harness.BIN, "llmq"), *args], stdout=subprocess.PIPE,
                             stderr=errf, text=True, stdin=subprocess.DEVNULL,
                             env=dict(os.environ, LLMQ_BROKER=self.c.front))
        errf.close()
        return p, errpath

    def wait_for(self, cond, what, timeout=15):
        end = time.time() + timeout
        while time.time() < end:
            if cond():
                return
            time.sleep(0.1)
        self.fail(f"timed out waiting for {what}")

    def test_wait_plain_log_lines_and_ctrl_c(self):
        batch = self.submit(400, "sig-")
        p, errpath = self.bg("wait", batch)
        with open(errpath) as f:
            self.wait_for(lambda: f.seek(0) == 0 and "in_progress" in f.read(), "a log line")
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=10)
        self.assertLess(time.monotonic() - t0, 2, "Ctrl-C stops wait at once")
        with open(errpath) as f:
            err = f.read()
        self.assertEqual(p.returncode, 130, err)
        self.assertEqual(out, "")
        self.assertNotIn("\r", err, "no terminal control on a non-tty")
        self.assertNotIn("\x1b", err)
        lines = err.splitlines()
        self.assertRegex(lines[0], rf"^llmq: {batch} in_progress \d+/400 \(\d+\.\d%\) \S+ jobs/s "
                                   r"eta \S+ failed \d+ retried \d+$")
        self.assertIn(f"llmq wait {batch}", lines[-1], "the message says how to resume")
        self.assertTrue(all(line.startswith("llmq: ") for line in lines), lines)
        # the batch keeps running
        st = self.c.status(batch)
        self.assertEqual(st["status"], "in_progress")
        n0 = st["request_counts"]["completed"]
        self.wait_for(lambda: self.c.status(batch)["request_counts"]["completed"] > n0,
                      "the batch to go on without its waiter", 10)
        self.c.llmq("cancel", batch, check=0)

    def test_ctrl_c_on_run(self):
        inp = harness.gen_batch(self.c.path("runsig.jsonl"), 400, prefix="runsig-")
        out = self.c.path("runsig.out")
        p, errpath = self.bg("run", "--name", "runsig", inp, "-o", out)
        with open(errpath) as f:
            self.wait_for(lambda: f.seek(0) == 0 and "in_progress" in f.read(), "a log line")
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=10)
        with open(errpath) as f:
            err = f.read()
        self.assertEqual(p.returncode, 130, err)
        batch = re.search(r"batch (batch_\w+) (submitted|ready)", err).group(1)
        self.assertIn(f"llmq wait {batch}", err)
        self.assertFalse(os.path.exists(out))
        self.assertEqual(self.c.status(batch)["status"], "in_progress")
        # rerunning with the same name resumes the same batch, then cancel it
        p2, errpath2 = self.bg("run", "--name", "runsig", inp, "-o", out)
        with open(errpath2) as f:
            self.wait_for(lambda: f.seek(0) == 0 and "in_progress" in f.read(), "the rerun")
        self.c.llmq("cancel", batch, check=0)
        o2, _ = p2.communicate(timeout=30)
        self.assertEqual(o2.strip(), batch)
        self.assertEqual(p2.returncode, 3, "a cancelled run is not a success")

    def test_cancel_mid_way(self):
        batch = self.submit(2000, "can-")
        self.wait_for(lambda: self.c.status(batch)["request_counts"]["completed"] >= 4,
                      "a few jobs to finish")
        w, werr = self.bg("wait", batch)
        r = self.c.llmq("cancel", batch, check=0)
        self.assertRegex(r.stdout, rf"^{batch} (cancelling|cancelled)\n$")
        # wait ends when the in-flight jobs are done: "cancelled", exit 3
        w.communicate(timeout=20)
        with open(werr) as f:
            err = f.read()
        self.assertEqual(w.returncode, 3, err)
        self.assertIn(f"batch {batch} was cancelled", err)
        st = self.c.status(batch)
        self.assertEqual(st["status"], "cancelled")
        self.assertIsNotNone(st["cancelled_at"])
        self.assertIsNone(st["completed_at"])
        rc = st["request_counts"]
        self.assertEqual(rc["total"], 2000)
        self.assertLess(rc["completed"] + rc["failed"], 100, "pending jobs stopped")
        self.assertEqual(st["llmq"]["pending"] + st["llmq"]["in_flight"], 0)
        # nothing more reaches the upstream
        sent = sum(v for k, v in self.c.fake_get("/counts").items() if k.startswith("can-"))
        time.sleep(2.5)
        self.assertEqual(sum(v for k, v in self.c.fake_get("/counts").items()
                             if k.startswith("can-")), sent)
        # results: the finished ones, in input order. Exit 3: the file has
        # fewer lines than the input, and stderr says so.
        out, err = self.c.path("can.out"), self.c.path("can.err")
        r = self.c.llmq("results", batch, "-o", out, "--errors", err)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("cancelled", r.stderr)
        res = harness.read_jsonl(out)
        self.assertEqual(len(res), rc["completed"])
        self.assertLess(len(res), 2000)
        idx = [int(x["custom_id"][len("can-"):]) for x in res]
        self.assertEqual(idx, sorted(idx), "input order")
        self.assertTrue(all(x["error"] is None for x in res))
        self.assertEqual(harness.read_jsonl(err), [])
        # cancelling again is harmless
        r = self.c.llmq("cancel", batch, check=0)
        self.assertEqual(r.stdout, f"{batch} cancelled\n")
        self.assertEqual(self.c.llmq("cancel", "batch_nope").returncode, 1)


class ClientLargeResults(_ClassCluster):
    """Long completions: the fake pads every 200 body to 20 kB (~5000 tokens)."""
    cluster_args = dict(workers=1, concurrency=200, fake_args=["--body-bytes", "20000"])

    # A results page is capped at 4 MiB of lines (at least one), so long
    # answers (1000 x 20 kB would be over the 16 MiB message limit) page fine.
    def test_results_of_long_completions(self):
        inp = harness.gen_batch(self.c.path("long.jsonl"), 1100, prefix="long-")
        out = self.c.path("long.out")
        r = self.c.llmq("run", inp, "-o", out, "--connect-timeout", "2")
        self.assertEqual(r.returncode, 0, r.stderr)
        res = harness.read_jsonl(out)
        self.assertEqual([x["custom_id"] for x in res], [f"long-{i}" for i in range(1100)])


if __name__ == "__main__":
    harness.main()
