"""Bad input on the wire: garbage bytes and malformed messages on both broker
ports are dropped and counted; the broker keeps serving. Also the metrics
endpoint."""
import os
import socket
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

import zmq  # Debian python3-zmq


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


class Garbage(harness.ClusterTest):
    def setUp(self):
        self.mport = harness.free_port()
        self.c = harness.Cluster(workers=1, concurrency=50,
                                 broker_args=["--metrics", f"127.0.0.1:{self.mport}"])

    def ports(self):
        return [int(ep.rsplit(":", 1)[1]) for ep in (self.c.front, self.c.back)]

    def test_raw_tcp_garbage(self):
        for port in self.ports():
            for payload in [b"\x00" * 10, os.urandom(4096), b"GET / HTTP/1.1\r\n\r\n",
                            b"\xff" + b"\x00" * 8 + b"\x7f" + os.urandom(100)]:
                with socket.create_connection(("127.0.0.1", port)) as s:
                    s.sendall(payload)
                    time.sleep(0.05)
        self.assertTrue(self.c.broker.alive())
        self.assert_still_works()

    def test_malformed_messages_dropped_and_counted(self):
        ctx = zmq.Context()
        socks = []
        for ep in (self.c.front, self.c.back):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(ep)
            socks.append(s)
        bad = [
            [b"HELLO"],                              # one frame
            [b"LLMQ2", b"\x01", b"\x80"],            # wrong signature
            [b"LLMQ1", b"\x01\x02", b"\x80"],        # command frame not one byte
            [b"LLMQ1", b"\x01", b"\xc1"],            # not msgpack
            [b"LLMQ1", b"\x01", b"\x93\x01\x02\x03"],  # not a map
            [b"LLMQ1", b"\x01", b"\x81\xa3req"],     # truncated map
            [b"LLMQ1", b"\x7e", b"\x80"],            # unknown command
            [b"LLMQ1", b"\x02", b"\x83\xa3req\x01\xa5batch\xa1x\xa5first\x00"],  # no jobs
            [b"LLMQ1", b"\x23", b"\x80"],            # RESULT missing everything
            [b"LLMQ1", b"\x01", b"\x80", b"extra"],  # too many frames
        ]
        for s in socks:
            for msg in bad:
                s.send_multipart(msg)
        time.sleep(0.5)
        m = metrics(self.mport)
        front = m['llmq_dropped_messages_total{socket="frontend"}']
        back = m['llmq_dropped_messages_total{socket="backend"}']
        self.assertGreaterEqual(front, 9)
        self.assertGreaterEqual(back, 9)
        # an oversized frame (over ZMQ_MAXMSGSIZE) makes ZeroMQ drop the peer
        socks[0].send_multipart([b"LLMQ1", b"\x01", b"\x00" * (17 * 1024 * 1024)])
        time.sleep(0.5)
        for s in socks:
            s.close()
        ctx.term()
        self.assertTrue(self.c.broker.alive())
        self.assert_still_works()

    def test_metrics_endpoint(self):
        m = metrics(self.mport)
        self.assertEqual(m["llmq_workers"], 1)
        self.assertEqual(m["llmq_redis_up"], 1)
        self.assert_still_works()
        m = metrics(self.mport)
        self.assertGreaterEqual(m["llmq_results_recorded_total"], 20)
        self.assertEqual(m['llmq_upstream_responses_total{upstream="default",class="ok"}'], 20)
        with self.assertRaises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{self.mport}/nope", timeout=5)

    def assert_still_works(self):
        inp = harness.gen_batch(self.c.path("ok.jsonl"), 20)
        out = self.c.path("ok.out")
        self.c.llmq("run", inp, "-o", out, "--quiet", check=0)
        self.assertEqual(len(harness.read_jsonl(out)), 20)


if __name__ == "__main__":
    harness.main()
