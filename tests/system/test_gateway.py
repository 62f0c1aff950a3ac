"""llmq-gateway (issue 19) against a real cluster, driven by the official
`openai` Python SDK: the documented batch flow (upload, create, poll
retrieve, download), cancel, the `errors` of an invalid upload, idempotent
create, token isolation, and the gateway's memory on a 1,000,000-line batch.

The SDK (pinned) is installed by this test into a virtual environment it
makes with /usr/bin/python3 -m venv (kept in the build directory so later
runs reuse it). Every connection goes to 127.0.0.1.

Set LLMQ_GATEWAY_BIG=0 to skip the 1,000,000-line test while iterating.
"""
import json
import os
import subprocess
import sys
import textwrap
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Cluster, ClusterTest, Proc, free_port, gen_batch  # noqa: E402

OPENAI_VERSION = "1.54.4"
HTTPX_VERSION = "0.27.2"  # openai 1.54 predates httpx 0.28 (which dropped `proxies`)
TOKEN_A = "tok-alice-0123456789"
TOKEN_B = "tok-bob-9876543210"
MEM_LIMIT_KIB = 64 * 1024


def sdk_python():
    """The venv's python with the pinned openai SDK, made on first use."""
    venv = os.path.join(harness.BIN, f"venv-openai-{OPENAI_VERSION}-httpx-{HTTPX_VERSION}")
    py = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, ".installed")
    if not os.path.exists(stamp):
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--clear", venv], check=True)
        subprocess.run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        f"openai=={OPENAI_VERSION}", f"httpx=={HTTPX_VERSION}"],
                       check=True, timeout=600)
        open(stamp, "w").close()
    return py


# Common prologue of every SDK snippet: a client on the gateway.
PROLOGUE = textwrap.dedent("""
    import json, os, sys, time
    import openai
    from openai import OpenAI
    client = OpenAI(base_url=os.environ["GW_URL"], api_key=os.environ["GW_TOKEN"],
                    max_retries=0, timeout=600)
    def out(x):
        print(json.dumps(x))
    def poll(batch_id, until, limit=900):
        end = time.time() + limit
        while True:
            b = client.batches.retrieve(batch_id)
            if b.status in until or time.time() > end:
                return b
            time.sleep(0.2)
""")


class GatewayTest(ClusterTest):
    gw = None

    def start(self, workers=2, fake_args=()):
        self.c = Cluster(workers=workers, fake_args=fake_args)
        self.tokens = self.c.path("tokens")
        with open(self.tokens, "w") as f:
            f.write(f"# test tokens\n{TOKEN_A}\n\n  {TOKEN_B}  \n")
        self.port = free_port()
        self.data = self.c.path("gwdata")
        self.start_gateway()

    def start_gateway(self):
        argv = [os.path.join(harness.BIN, "llmq-gateway"), "--broker", self.c.front,
                "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data,
                "--tokens-file", self.tokens]
        self.gw = Proc("gateway", argv, self.c.path("gateway.log"))
        self.c.workers.append(self.gw)  # stopped (and its exit checked) by close()

        def up():
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/files", timeout=1)
            except urllib.error.HTTPError:
                return True
            except OSError:
                return False
            return True
        self.c._wait(up, "the gateway to listen")

    def tearDown(self):
        if getattr(self, "c", None) and self._failed():
            print(f"---- gateway.log ----\n{self.c.tail('gateway.log')}", file=sys.stderr)
        super().tearDown()

    def _failed(self):
        result = getattr(getattr(self, "_outcome", None), "result", None)
        return result is not None and any(
            t is self for t, _ in list(result.failures) + list(result.errors))

    def sdk(self, code, token=TOKEN_A, timeout=900, **env_extra):
        """Runs an SDK snippet; returns the JSON values it printed."""
        env = dict(os.environ)
        env.update(GW_URL=f"http://127.0.0.1:{self.port}/v1", GW_TOKEN=token,
                   NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
        env.update({k: str(v) for k, v in env_extra.items()})
        r = subprocess.run([sdk_python(), "-c", PROLOGUE + textwrap.dedent(code)],
                           capture_output=True, text=True, timeout=timeout, env=env)
        if r.returncode != 0:
            raise AssertionError(f"SDK snippet failed ({r.returncode}):\n{r.stderr[-4000:]}")
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def http(self, method, path, token=TOKEN_A, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=body, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def vm_hwm_kib(self):
        with open(f"/proc/{self.gw.p.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise AssertionError("no VmHWM")


class TestGatewayFlow(GatewayTest):
    def test_documented_flow_5000(self):
        """upload, create, poll retrieve until completed, download: every
        output line parses with the SDK and answers its own custom_id."""
        self.start()
        path = gen_batch(self.c.path("in.jsonl"), 5000)
        res = self.sdk("""
            f = client.files.create(file=open(os.environ["IN"], "rb"), purpose="batch")
            b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                      completion_window="24h", metadata={"job": "nightly"})
            out({"file": f.id, "bytes": f.bytes, "batch": b.id, "status": b.status,
                 "meta": b.metadata})
            b = poll(b.id, ("completed", "failed", "cancelled", "expired"))
            out({"status": b.status, "counts": b.request_counts.model_dump(),
                 "output": b.output_file_id, "errors": b.error_file_id,
                 "completed_at": b.completed_at, "in_progress_at": b.in_progress_at})
            text = client.files.content(b.output_file_id).text
            from openai.types.chat import ChatCompletion
            n, bad = 0, []
            for line in text.splitlines():
                row = json.loads(line)
                c = ChatCompletion.model_validate(row["response"]["body"])
                if (row["response"]["status_code"] != 200 or row["error"] is not None
                        or row["custom_id"] not in c.choices[0].message.content):
                    bad.append(row["custom_id"])
                n += 1
            ids = [json.loads(l)["custom_id"] for l in text.splitlines()]
            out({"lines": n, "bad": bad[:5], "ids": ids,
                 "file": client.files.retrieve(b.output_file_id).purpose,
                 "listed": [x.id for x in client.batches.list(limit=10).data]})
        """, IN=path)
        self.assertEqual(res[0]["bytes"], os.path.getsize(path))
        self.assertIn(res[0]["status"], ("validating", "in_progress"))
        self.assertEqual(res[0]["meta"], {"job": "nightly"})
        self.assertEqual(res[1]["status"], "completed", res[1])
        self.assertEqual(res[1]["counts"], {"total": 5000, "completed": 5000, "failed": 0})
        self.assertIsNone(res[1]["errors"])
        self.assertIsNotNone(res[1]["completed_at"])
        self.assertIsNotNone(res[1]["in_progress_at"])
        self.assertEqual(res[2]["lines"], 5000)
        self.assertEqual(res[2]["bad"], [])
        self.assertEqual(res[2]["ids"], [f"req-{i}" for i in range(5000)], "input order")
        self.assertEqual(res[2]["file"], "batch_output")
        self.assertEqual(res[2]["listed"], [res[0]["batch"]])

    def test_idempotent_create_and_files_api(self):
        """A retried create with the same input gives the same batch (one
        batch at the broker); list / retrieve / content / delete of files."""
        self.start()
        path = gen_batch(self.c.path("in.jsonl"), 50)
        res = self.sdk("""
            f = client.files.create(file=open(os.environ["IN"], "rb"), purpose="batch")
            a = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
            b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
            poll(a.id, ("completed",))
            content = client.files.content(f.id).read()
            listed = [x.id for x in client.files.list().data]
            d = client.files.delete(f.id)
            try:
                client.files.retrieve(f.id)
                gone = False
            except openai.NotFoundError:
                gone = True
            out({"a": a.id, "b": b.id, "same": content == open(os.environ["IN"], "rb").read(),
                 "listed": f.id in listed, "deleted": d.deleted, "gone": gone})
        """, IN=path)[0]
        self.assertEqual(res["a"], res["b"])
        self.assertTrue(res["same"])
        self.assertTrue(res["listed"])
        self.assertTrue(res["deleted"])
        self.assertTrue(res["gone"])
        batches = json.loads(self.c.llmq("list", "--json", check=0).stdout)["data"]
        self.assertEqual(len(batches), 1, "a retried create must not make a second batch")

    def test_invalid_upload_errors_with_line(self):
        self.start()
        path = self.c.path("bad.jsonl")
        gen_batch(path, 5)
        with open(path, "a") as f:
            f.write('{"custom_id":"x","method":"POST","url":"/v1/chat/completions","body":\n')
            f.write('{"custom_id":"y","method":"POST","url":"/v1/embeddings","body":{}}\n')
        res = self.sdk("""
            f = client.files.create(file=open(os.environ["IN"], "rb"), purpose="batch")
            b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
            b = poll(b.id, ("failed", "completed", "in_progress"))
            out({"status": b.status, "errors": b.errors.model_dump() if b.errors else None})
            try:
                client.files.create(file=("x.jsonl", b"", "application/jsonl"), purpose="batch")
                out({"empty": "accepted"})
            except openai.BadRequestError as e:
                out({"empty": e.status_code})
        """, IN=path)
        self.assertEqual(res[0]["status"], "failed")
        errs = res[0]["errors"]["data"]
        self.assertEqual([e["line"] for e in errs], [6, 7], errs)
        self.assertTrue(errs[0]["message"].startswith("line 6:"), errs[0]["message"])
        self.assertIn("invalid JSON", errs[0]["message"])
        self.assertIn("is not the batch's endpoint", errs[1]["message"])
        for e in errs:
            self.assertNotIn(self.data, e["message"], "no server paths in errors")
        self.assertEqual(res[1]["empty"], 400)
        batches = json.loads(self.c.llmq("list", "--json", check=0).stdout)["data"]
        self.assertEqual(batches, [], "an invalid file must not reach the broker")

    def test_cancel_stops_a_running_batch(self):
        self.start(workers=1, fake_args=["--latency-ms", "200"])
        path = gen_batch(self.c.path("in.jsonl"), 3000)
        res = self.sdk("""
            f = client.files.create(file=open(os.environ["IN"], "rb"), purpose="batch")
            b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
            while True:
                b = client.batches.retrieve(b.id)
                if b.status == "in_progress" and b.request_counts.completed > 0:
                    break
                time.sleep(0.05)
            c = client.batches.cancel(b.id)
            out({"after_cancel": c.status})
            b = poll(b.id, ("cancelled",))
            out({"status": b.status, "counts": b.request_counts.model_dump(),
                 "cancelled_at": b.cancelled_at, "cancelling_at": b.cancelling_at,
                 "output": b.output_file_id})
            lines = client.files.content(b.output_file_id).text.splitlines()
            out({"lines": len(lines)})
        """, IN=path)
        self.assertIn(res[0]["after_cancel"], ("cancelling", "cancelled"))
        self.assertEqual(res[1]["status"], "cancelled")
        self.assertIsNotNone(res[1]["cancelled_at"])
        self.assertIsNotNone(res[1]["cancelling_at"])
        counts = res[1]["counts"]
        self.assertLess(counts["completed"] + counts["failed"], 3000, "cancel stopped nothing")
        self.assertEqual(res[2]["lines"], counts["completed"])
        fake = self.c.fake_get("/stats")
        served = fake.get("requests", fake.get("total", 0))
        self.assertLess(served, 3000)

    def test_restart_resumes_an_unfinished_submission(self):
        """A gateway killed while a batch waits to reach the broker resumes
        it on restart, as one batch."""
        self.start()
        self.c.broker.stop()
        path = gen_batch(self.c.path("in.jsonl"), 200)
        first = self.sdk("""
            f = client.files.create(file=open(os.environ["IN"], "rb"), purpose="batch")
            b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
            out({"batch": b.id, "status": client.batches.retrieve(b.id).status})
        """, IN=path)[0]
        self.assertEqual(first["status"], "validating")
        self.gw.kill9()
        self.c.start_broker()
        self.start_gateway()
        res = self.sdk("""
            b = poll(os.environ["B"], ("completed", "failed"))
            out({"status": b.status, "counts": b.request_counts.model_dump()})
        """, B=first["batch"])[0]
        self.assertEqual(res["status"], "completed", res)
        self.assertEqual(res["counts"]["completed"], 200)
        batches = json.loads(self.c.llmq("list", "--json", check=0).stdout)["data"]
        self.assertEqual(len(batches), 1)

    def test_tokens_see_only_their_own(self):
        self.start()
        path = gen_batch(self.c.path("in.jsonl"), 20)
        a = self.sdk("""
            f = client.files.create(file=open(os.environ["IN"], "rb"), purpose="batch")
            b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
            b = poll(b.id, ("completed",))
            out({"file": f.id, "batch": b.id, "output": b.output_file_id})
        """, IN=path)[0]
        b = self.sdk("""
            codes = {}
            def code(name, fn):
                try:
                    fn()
                    codes[name] = 200
                except openai.APIStatusError as e:
                    codes[name] = e.status_code
            code("file", lambda: client.files.retrieve(os.environ["F"]))
            code("content", lambda: client.files.content(os.environ["F"]))
            code("output", lambda: client.files.content(os.environ["O"]))
            code("output_meta", lambda: client.files.retrieve(os.environ["O"]))
            code("delete", lambda: client.files.delete(os.environ["F"]))
            code("batch", lambda: client.batches.retrieve(os.environ["B"]))
            code("cancel", lambda: client.batches.cancel(os.environ["B"]))
            code("create", lambda: client.batches.create(
                input_file_id=os.environ["F"], endpoint="/v1/chat/completions",
                completion_window="24h"))
            out(codes)
            out({"files": [x.id for x in client.files.list().data],
                 "batches": [x.id for x in client.batches.list().data]})
        """, token=TOKEN_B, F=a["file"], B=a["batch"], O=a["output"])
        self.assertEqual(b[0], {"file": 404, "content": 404, "output": 404, "output_meta": 404,
                                "delete": 404, "batch": 404, "cancel": 404, "create": 404})
        self.assertEqual(b[1], {"files": [], "batches": []})
        # Unknown and missing tokens: 401, as OpenAI answers.
        self.assertEqual(self.http("GET", "/v1/files", token="nope")[0], 401)
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/v1/batches")
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(req, timeout=30)
        self.assertEqual(cm.exception.code, 401)
        # The owner still sees its file.
        self.assertEqual(self.http("GET", f"/v1/files/{a['file']}")[0], 200)


def sanitized():
    """True for an ASan build, whose shadow memory makes RSS meaningless."""
    with open(os.path.join(harness.BIN, "llmq-gateway"), "rb") as f:
        return b"__asan_init" in f.read()


@unittest.skipIf(os.environ.get("LLMQ_GATEWAY_BIG") == "0", "LLMQ_GATEWAY_BIG=0")
class TestGatewayMemory(GatewayTest):
    def test_million_lines_in_bounded_memory(self):
        """A 1,000,000-line upload, batch and download keep the gateway's
        peak RSS (VmHWM) under 64 MiB."""
        if sanitized():
            self.skipTest("memory bound not measured under AddressSanitizer")
        n = 1_000_000
        self.start(workers=2)
        path = self.c.path("big.jsonl")
        with open(path, "w") as f:
            for i in range(n):
                f.write('{"custom_id":"r%d","method":"POST","url":"/v1/chat/completions",'
                        '"body":{"model":"m","messages":[{"role":"user","content":"hi r%d"}],'
                        '"max_tokens":4}}\n' % (i, i))
        res = self.sdk("""
            f = client.files.create(file=open(os.environ["IN"], "rb"), purpose="batch")
            b = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
            b = poll(b.id, ("completed", "failed", "cancelled"), limit=1500)
            out({"status": b.status, "counts": b.request_counts.model_dump()})
            n, last = 0, None
            with client.files.with_streaming_response.content(b.output_file_id) as r:
                for line in r.iter_lines():
                    if line:
                        n += 1
                        last = line
            out({"lines": n, "last": json.loads(last)["custom_id"]})
        """, IN=path, timeout=1700)
        hwm = self.vm_hwm_kib()
        print(f"gateway VmHWM after {n} lines up and down: {hwm} KiB", file=sys.stderr)
        self.assertEqual(res[0]["status"], "completed", res[0])
        self.assertEqual(res[0]["counts"]["completed"], n)
        self.assertEqual(res[1]["lines"], n)
        self.assertEqual(res[1]["last"], f"r{n - 1}")
        self.assertLess(hwm, MEM_LIMIT_KIB, f"gateway peak RSS {hwm} KiB")


if __name__ == "__main__":
    harness.main()
