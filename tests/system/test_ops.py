"""Operability (issue 16): --version on every binary; the broker's and a
worker's /metrics during a run (pending falls to 0, valid Prometheus text,
every series the Grafana dashboard queries is served); output conformance
(request_id always a string, error.message preferred); `llmq top` under tmux
(screen captured and asserted, q quits)."""
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def value(text, series):
    """The value of one exact series line ('name' or 'name{labels}'), or None."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


class Version(harness.ClusterTest):
    def test_every_binary_prints_its_version(self):
        for name in ("llmq", "llmq-broker", "llmq-worker", "llmq-gateway"):
            r = subprocess.run([os.path.join(harness.BIN, name), "--version"],
                               capture_output=True, text=True, timeout=10)
            self.assertEqual(r.returncode, 0, r.stderr)
            first, libs = r.stdout.splitlines()[:2]
            self.assertRegex(first, rf"^{name} \d+\.\d+\.\d+")
            for lib in ("libzmq", "libcurl", "msgpack-c", "hiredis", "jansson"):
                self.assertIn(lib, libs)


class Metrics(harness.ClusterTest):
    def test_pending_falls_to_zero_and_dashboard_series_exist(self):
        bport, wport = harness.free_port(), harness.free_port()
        self.c = c = harness.Cluster(
            workers=1, concurrency=20, fake_args=["--latency-ms", "20"],
            broker_args=["--metrics", f"127.0.0.1:{bport}"],
            worker_args=["--metrics", f"127.0.0.1:{wport}"])
        inp = harness.gen_batch(c.path("in.jsonl"), 2000)
        run = c.llmq_bg("run", inp, "-o", c.path("out.jsonl"), "--quiet")
        seen, during = [], ""
        while run.poll() is None:
            text = scrape(bport)
            v = value(text, "llmq_jobs_pending")
            if v is not None:
                seen.append(v)
                if v > 0:
                    during = text  # per-batch and per-upstream series exist while running
            time.sleep(0.2)
        self.assertEqual(run.returncode, 0, run.stderr.read())
        self.assertTrue(any(v > 0 for v in seen), f"pending never above 0: {seen}")
        # The poll runs each second: pending reaches 0 and stays there.
        c._wait(lambda: value(scrape(bport), "llmq_jobs_pending") == 0, "pending to reach 0")
        broker, worker = scrape(bport), scrape(wport)
        self.assertEqual(value(broker, 'llmq_jobs_completed_total{upstream="default"}'), 2000)
        self.assertEqual(value(broker, 'llmq_upstream_request_duration_seconds_count'
                                       '{upstream="default"}'), 2000)
        usage = c.status(run.stdout.read().strip())["usage"]
        self.assertEqual(value(broker, 'llmq_tokens_total{upstream="default",kind="prompt"}'),
                         usage["prompt_tokens"])
        self.assertIsNotNone(value(broker, "llmq_redis_memory_used_bytes"))
        self.assertEqual(value(worker, 'llmq_worker_jobs_total{outcome="ok"}'), 2000)
        self.assertEqual(value(worker, 'llmq_worker_upstream_responses_total'
                                       '{upstream="default",code="200"}'), 2000)
        self.assertEqual(value(worker, "llmq_worker_broker_connected"), 1)
        paths = []
        self.assertRegex(during, r'llmq_upstream_jobs_pending\{upstream="default"\} [1-9]')
        self.assertRegex(during, r'llmq_batch_jobs\{batch="batch_\w+",name="",upstream="default",'
                                 r'state="pending"\} [1-9]')
        for name, text in (("during.prom", during), ("broker.prom", broker),
                           ("worker.prom", worker)):
            with open(c.path(name), "w") as f:
                f.write(text)
            paths.append(c.path(name))
            r = subprocess.run(["promtool", "check", "metrics"], input=text,
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, f"{name}: {r.stdout}{r.stderr}")
        r = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "deploy/grafana/check_dashboard.py"),
                            "--metrics", *paths], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_worker_metrics_bad_address_is_a_clear_error(self):
        r = subprocess.run([os.path.join(harness.BIN, "llmq-worker"), "--upstream",
                            "http://127.0.0.1:9", "--metrics", "nope"],
                           capture_output=True, text=True, timeout=20)
        self.assertIn(r.returncode, (1, 2))
        self.assertIn("wants [HOST:]PORT", r.stderr)


class _Upstream(http.server.BaseHTTPRequestHandler):
    """No x-request-id; custom_ids starting with "bad" get a 400 whose
    body has a short "error" string and a long "message"."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cid = body["metadata"]["custom_id"]
        if cid.startswith("bad"):
            code, out = 400, {"error": "invalid_thing",
                              "message": f"The request {cid} is invalid: max_tokens too large"}
        else:
            code, out = 200, {"id": "x", "object": "chat.completion", "choices": [],
                              "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
        data = json.dumps(out).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class Conformance(harness.ClusterTest):
    def test_request_id_string_and_error_message_from_body(self):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        self.c = c = harness.Cluster(workers=0, start=False)
        c.start_redis()
        c.start_fake()
        c.start_broker()
        c.start_worker(extra=["--upstream", f"http://127.0.0.1:{srv.server_address[1]}"])
        c.wait_workers(1)
        inp = c.path("in.jsonl")
        harness.gen_batch(inp, 3)
        harness.gen_batch(c.path("bad.jsonl"), 2, prefix="bad-")
        with open(inp, "a") as f, open(c.path("bad.jsonl")) as g:
            f.write(g.read())
        out = c.path("out.jsonl")
        c.llmq("run", inp, "-o", out, "--quiet", check=3)
        lines = harness.read_jsonl(out)
        self.assertEqual(len(lines), 5)
        for x in lines:
            self.assertIsInstance(x["response"]["request_id"], str)
        for x in lines[3:]:
            self.assertEqual(x["error"]["code"], "http_400")
            self.assertEqual(x["error"]["message"],
                             f"The request {x['custom_id']} is invalid: max_tokens too large")


class Top(harness.ClusterTest):
    def capture(self):
        r = subprocess.run(["tmux", "-S", self.sock, "capture-pane", "-p", "-t", "top"],
                           capture_output=True, text=True, timeout=10)
        return r.stdout

    def wait_screen(self, cond, what):
        last = [""]

        def ok():
            last[0] = self.capture()
            return cond(last[0])
        try:
            self.c._wait(ok, what, timeout=30)
        except AssertionError:
            raise AssertionError(f"{what}; screen:\n{last[0]}")
        return last[0]

    def test_top_under_tmux_80x24(self):
        if not shutil.which("tmux"):
            self.skipTest("tmux missing (scripts/install-deps.sh installs it)")
        self.c = c = harness.Cluster(workers=2, concurrency=5, fake_args=["--latency-ms", "100"])
        self.sock = c.path("tmux.sock")
        self.addCleanup(subprocess.run, ["tmux", "-S", self.sock, "kill-server"],
                        capture_output=True)
        inp = harness.gen_batch(c.path("in.jsonl"), 400)
        batch = c.llmq("submit", inp, "--name", "nightly-eval", check=0).stdout.strip()
        subprocess.run(["tmux", "-S", self.sock, "-f", "/dev/null", "new-session", "-d",
                        "-s", "top", "-x", "80", "-y", "24", "-e", f"LLMQ_BROKER={c.front}",
                        os.path.join(harness.BIN, "llmq"), "top"], check=True, timeout=10)
        # A full frame: the batch running, both workers, the upstream.
        short = batch[len("batch_"):]
        screen = self.wait_screen(lambda s: short in s and "in_progress" in s
                                  and "WORKERS  2 connected" in s, "top to show the run")
        lines = screen.splitlines()
        self.assertTrue(lines[0].startswith("llmq top"), screen)
        self.assertIn("nightly-eval", screen)
        self.assertIn("UPSTREAMS", screen)
        self.assertRegex(screen, r"\ndefault +\d+")
        self.assertIn("q quit", screen)
        self.assertLessEqual(len(lines), 24)
        self.assertTrue(all(len(line) <= 80 for line in lines))
        # Refreshed in place: the same screen moves to the finished batch.
        c.llmq("wait", batch, "--quiet", check=0)
        screen = self.wait_screen(lambda s: re.search(
            rf"{short} +completed +100\.0% +400/400 +0 .*done +nightly-eval", s), "top to show the batch done")
        # q quits and gives the terminal back (the tmux session ends with it).
        subprocess.run(["tmux", "-S", self.sock, "send-keys", "-t", "top", "q"], check=True)
        c._wait(lambda: subprocess.run(["tmux", "-S", self.sock, "has-session", "-t", "top"],
                                       capture_output=True).returncode != 0, "top to quit on q")

    def test_top_without_a_terminal_prints_one_frame(self):
        self.c = c = harness.Cluster(workers=1, concurrency=5)
        r = c.llmq("top", check=0)
        self.assertIn("BATCHES", r.stdout)
        self.assertIn("WORKERS  1 connected", r.stdout)
        self.assertNotIn("\033[", r.stdout)


if __name__ == "__main__":
    harness.main()
