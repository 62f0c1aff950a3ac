"""Workers of either protocol generation against the broker: a worker whose
READY has no `batch` (llmq before JOB_LIST) gets only JOB and is served with
single RESULTs; one whose READY has `batch` gets JOB_LIST of at most that
many jobs and may answer with RESULT_LIST. Both finish a batch, every job
once (docs/protocol.md 7.2, "Lists"). The workers are played by this test
over a raw DEALER with a minimal msgpack codec, so what the broker sends is
seen byte for byte."""
import json
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

import zmq  # Debian python3-zmq

JOB, RESULT, RESULT_ACK, CREDIT = 0x22, 0x23, 0x24, 0x21
READY, JOB_LIST, RESULT_LIST, HEARTBEAT = 0x20, 0x27, 0x28, 0x25


def pack(v):
    """msgpack of None/bool/int/str/list/dict (what these messages need)."""
    if isinstance(v, bool):
        return b"\xc3" if v else b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("b", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, str):
        b = v.encode()
        return (bytes([0xa0 | len(b)]) if len(b) < 32 else b"\xdb" + struct.pack(">I", len(b))) + b
    if isinstance(v, list):
        return b"\xdd" + struct.pack(">I", len(v)) + b"".join(pack(x) for x in v)
    if isinstance(v, dict):
        return b"\xdf" + struct.pack(">I", len(v)) + b"".join(pack(k) + pack(x)
                                                              for k, x in v.items())
    raise TypeError(type(v))


def unpack(b, i=0):
    """Decodes one msgpack object at b[i:]; returns (value, next index)."""
    t = b[i]
    i += 1
    if t <= 0x7f:
        return t, i
    if t >= 0xe0:
        return t - 256, i
    if 0x80 <= t <= 0x8f or t in (0xde, 0xdf):
        n = t & 0x0f if t <= 0x8f else struct.unpack(">H" if t == 0xde else ">I",
                                                     b[i:i + (2 if t == 0xde else 4)])[0]
        i += 0 if t <= 0x8f else (2 if t == 0xde else 4)
        d = {}
        for _ in range(n):
            k, i = unpack(b, i)
            d[k], i = unpack(b, i)
        return d, i
    if 0x90 <= t <= 0x9f or t in (0xdc, 0xdd):
        n = t & 0x0f if t <= 0x9f else struct.unpack(">H" if t == 0xdc else ">I",
                                                     b[i:i + (2 if t == 0xdc else 4)])[0]
        i += 0 if t <= 0x9f else (2 if t == 0xdc else 4)
        out = []
        for _ in range(n):
            x, i = unpack(b, i)
            out.append(x)
        return out, i
    if 0xa0 <= t <= 0xbf or t in (0xd9, 0xda, 0xdb, 0xc4, 0xc5, 0xc6):
        if t <= 0xbf:
            n = t & 0x1f
        else:
            w = {0xd9: 1, 0xc4: 1, 0xda: 2, 0xc5: 2, 0xdb: 4, 0xc6: 4}[t]
            n = int.from_bytes(b[i:i + w], "big")
            i += w
        return b[i:i + n].decode(errors="replace"), i + n
    if t in (0xc2, 0xc3):
        return t == 0xc3, i
    if t in (0xcc, 0xcd, 0xce, 0xcf):
        w = 1 << (t - 0xcc)
        return int.from_bytes(b[i:i + w], "big"), i + w
    if t in (0xd0, 0xd1, 0xd2, 0xd3):
        w = 1 << (t - 0xd0)
        return int.from_bytes(b[i:i + w], "big", signed=True), i + w
    raise ValueError(f"msgpack byte {t:#x}")


class RawWorker:
    """A worker played over a DEALER: registers, runs nothing, answers
    every job at once with an OK result."""

    def __init__(self, c, wid, concurrency, batch=None, lists=False):
        self.ctx = zmq.Context()
        self.s = self.ctx.socket(zmq.DEALER)
        self.s.setsockopt(zmq.LINGER, 0)
        self.s.setsockopt(zmq.ROUTING_ID, wid.encode())
        self.s.connect(c.back)
        self.lists = lists  # answer JOB_LIST with RESULT_LIST
        self.cmds = []      # (command, number of jobs) received
        self.done = set()
        ready = {"worker": wid, "concurrency": concurrency, "credit": concurrency,
                 "upstreams": ["default"]}
        if batch is not None:
            ready["batch"] = batch
        self.send(READY, ready)

    def send(self, cmd, body):
        self.s.send_multipart([b"LLMQ1", bytes([cmd]), pack(body)])

    @staticmethod
    def result(job):
        return {"batch": job["batch"], "index": job["index"], "attempt": job["attempt"],
                "outcome": 0, "status": 200,
                "body": json.dumps({"id": "x", "choices": [], "usage": {
                    "prompt_tokens": 1, "completion_tokens": 1}}),
                "prompt_tokens": 1, "completion_tokens": 1, "latency_ms": 1}

    def serve(self, until, timeout=60):
        end = time.time() + timeout
        while not until() and time.time() < end:
            if not self.s.poll(100):
                continue
            frames = self.s.recv_multipart()
            cmd = frames[1][0]
            body, _ = unpack(frames[2])
            if cmd == JOB:
                jobs = [body]
            elif cmd == JOB_LIST:
                jobs = body["jobs"]
            else:
                self.cmds.append((cmd, 0))
                if cmd == HEARTBEAT:
                    self.send(HEARTBEAT, {})
                continue
            self.cmds.append((cmd, len(jobs)))
            for j in jobs:
                self.done.add((j["batch"], j["index"]))
            if cmd == JOB_LIST and self.lists:
                self.send(RESULT_LIST, {"results": [self.result(j) for j in jobs]})
            else:
                for j in jobs:
                    self.send(RESULT, self.result(j))
            self.send(CREDIT, {"credit": len(jobs)})

    def close(self):
        self.send(0x26, {})  # DISCONNECT: leaving
        self.s.setsockopt(zmq.LINGER, 1000)
        self.s.close()
        self.ctx.term()


class WireCompat(harness.ClusterTest):
    def setUp(self):
        self.c = harness.Cluster(workers=0)

    def run_with(self, w, n):
        inp = harness.gen_batch(self.c.path("in.jsonl"), n)
        out = self.c.path("out.jsonl")
        p = self.c.llmq_bg("run", inp, "-o", out, "--quiet")
        try:
            w.serve(lambda: p.poll() is not None, timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
            _, err = p.communicate()
            w.close()
        self.assertEqual(p.returncode, 0, err[-2000:])
        rows = harness.read_jsonl(out)
        self.assertEqual(sorted(r["custom_id"] for r in rows),
                         sorted(f"req-{i}" for i in range(n)))
        self.assertEqual(len(w.done), n)

    def test_worker_without_batch_gets_only_job(self):
        w = RawWorker(self.c, "old-w", 8)
        self.run_with(w, 40)
        got = {cmd for cmd, _ in w.cmds}
        self.assertIn(JOB, got)
        self.assertNotIn(JOB_LIST, got)
        self.assertIn(RESULT_ACK, got)

    def test_worker_with_batch_gets_job_lists_and_may_answer_either_way(self):
        for lists in (True, False):
            w = RawWorker(self.c, f"new-w-{lists}", 16, batch=4, lists=lists)
            self.run_with(w, 60)
            sizes = [n for cmd, n in w.cmds if cmd == JOB_LIST]
            self.assertNotIn(JOB, {cmd for cmd, _ in w.cmds})
            self.assertTrue(sizes)
            self.assertLessEqual(max(sizes), 4)  # the READY's batch bounds a list
            self.assertGreater(max(sizes), 1)    # and several jobs do share one
            self.assertIn(RESULT_ACK, {cmd for cmd, _ in w.cmds})


if __name__ == "__main__":
    harness.main()
