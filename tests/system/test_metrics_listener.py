"""The broker's /metrics listener against hostile clients (issue 18): a
flood of 10,000 idle connections, slow senders (slowloris), an oversized
request line and garbage, all while a batch runs. The batch completes
exactly once, the endpoint still answers, the broker holds a bounded number
of connections, and a port given alone binds 127.0.0.1 only. (How much the
flood delays dispatch is measured by bench/metrics_flood.py, not asserted.)"""
import os
import resource
import socket
import threading
import time
import urllib.error
import urllib.request

import harness

FLOOD = 10000


def raise_fd_limit(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def get(port, path="/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        return r.status, r.read().decode()


def answered(port, data, tries=10):
    """raw(), again while the answer is empty: under a flood a fresh
    connection may be evicted (oldest first) before it is read."""
    for _ in range(tries):
        out = raw(port, data)
        if out:
            return out
    return b""


def raw(port, data, wait=10):
    """Sends data on a fresh connection; returns what the server answered."""
    with socket.create_connection(("127.0.0.1", port), wait) as s:
        try:
            s.sendall(data)
        except OSError:
            pass  # the server may answer and close before reading it all
        out = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                out += chunk
        except OSError:
            pass
        return out


def listening_addresses(port):
    """Local addresses with a socket listening on port (from /proc/net)."""
    out = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            addr, p = cols[1].rsplit(":", 1)
            if int(p, 16) == port and cols[3] == "0A":  # LISTEN
                out.append(addr)
    return out


class Flood:
    """Opens n idle connections (kept open) and n_slow slowloris senders
    in background threads until stop()."""

    def __init__(self, port, n, n_slow=50):
        self.port, self.n, self.n_slow = port, n, n_slow
        self.socks, self.opened, self.refused = [], 0, 0
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._idle, daemon=True),
                        threading.Thread(target=self._slow, daemon=True)]
        for t in self.threads:
            t.start()

    def _idle(self):
        for _ in range(self.n):
            if self.done.is_set():
                break
            try:
                s = socket.create_connection(("127.0.0.1", self.port), 5)
                self.socks.append(s)
                self.opened += 1
            except OSError:
                self.refused += 1

    def _slow(self):
        socks = []
        for _ in range(self.n_slow):
            try:
                socks.append(socket.create_connection(("127.0.0.1", self.port), 5))
            except OSError:
                pass
        req = b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 4000
        i = 0
        while not self.done.is_set() and i < len(req):
            for s in socks:
                try:
                    s.send(req[i:i + 1])
                except OSError:
                    pass
            i += 1
            time.sleep(0.1)
        for s in socks:
            s.close()

    def stop(self):
        self.threads[0].join(timeout=120)  # every idle connection opened
        self.done.set()
        for t in self.threads:
            t.join(timeout=60)
        for s in self.socks:
            s.close()


class MetricsListener(harness.ClusterTest):
    def test_flood_slowloris_garbage_while_a_batch_runs(self):
        limit = raise_fd_limit(FLOOD + 500)
        n = min(FLOOD, limit - 300)
        mport = harness.free_port()
        self.c = c = harness.Cluster(workers=2, concurrency=100, fake_args=["--latency-ms", "5"],
                                     broker_args=["--metrics", f"127.0.0.1:{mport}"])
        self.assertEqual(get(mport)[0], 200)
        inp = harness.gen_batch(c.path("in.jsonl"), 3000)
        out = c.path("out.jsonl")
        flood = Flood(mport, n)
        try:
            c._wait(lambda: flood.opened >= n // 4, "the flood to start", timeout=60)
            runner = c.llmq_bg("run", inp, "-o", out, "--quiet")
            # hostile requests while the batch and the flood run
            self.assertTrue(answered(mport, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n")
                            .startswith(b"HTTP/1.1 431"))
            self.assertTrue(answered(mport, os.urandom(64).replace(b"\n", b"x") + b"\r\n\r\n")
                            .startswith(b"HTTP/1.1 400"))
            self.assertTrue(answered(mport, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03")
                            .startswith(b"HTTP/1.1 400"))
            self.assertTrue(answered(mport, b"POST /metrics HTTP/1.1\r\n\r\n")
                            .startswith(b"HTTP/1.1 405"))
            rout, rerr = runner.communicate(timeout=240)
            self.assertEqual(runner.returncode, 0, rerr)
        finally:
            flood.stop()
        self.assertGreaterEqual(flood.opened, n * 9 // 10, f"only {flood.opened} connections")
        results = harness.read_jsonl(out)
        self.assertEqual(len(results), 3000)
        self.assertEqual(len({r["custom_id"] for r in results}), 3000)
        # the broker never held more than its cap: count its sockets now the
        # flood is over, and the endpoint answers at once
        status, text = get(mport)
        self.assertEqual(status, 200)
        self.assertIn("llmq_results_recorded_total 3000", text)
        fds = len(os.listdir(f"/proc/{c.broker.p.pid}/fd"))
        self.assertLess(fds, 200, "the broker holds the flood's sockets")
        self.assertTrue(c.broker.alive())

    def test_port_alone_binds_loopback(self):
        mport = harness.free_port()
        self.c = c = harness.Cluster(workers=0, broker_args=["--metrics", str(mport)])
        c._wait(lambda: listening_addresses(mport), "the metrics listener")
        addrs = listening_addresses(mport)
        self.assertEqual(addrs, ["0100007F"], addrs)  # 127.0.0.1, nothing else
        self.assertEqual(get(mport)[0], 200)
        self.assertEqual(self._status(mport, "/other"), 404)

    def _status(self, port, path):
        try:
            return get(port, path)[0]
        except urllib.error.HTTPError as e:
            return e.code


if __name__ == "__main__":
    harness.main()
