"""No single point of failure (issue 14): several brokers over one Redis.

- a batch opened on one broker is run by the workers of another (each
  broker re-reads the active batches twice a second);
- a batch cancelled on one broker drops the jobs another has prefetched;
- kill -9 of the broker the client talks to, mid-batch, with two brokers and
  four workers given both: the batch completes, every job has exactly one
  result line, and the figures (stall, jobs run twice, duplicates dropped)
  are printed, never asserted on time;
- a broker cut off from Redis (a TCP proxy the test cuts): its workers move
  to the other broker and the batch completes, exactly once;
- Redis master kill -9 with a replica and three sentinels, with
  --redis-wait-replicas 1: the fleet carries on, exactly once.
"""
import collections
import os
import shutil
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

FAST = ["--lease-ms", "3000", "--heartbeat-ms", "300", "--retry-base-ms", "50"]
WORKER_FAST = ["--heartbeat-ms", "300"]


class Brokers(harness.Cluster):
    """The harness cluster with nbrokers brokers over its one Redis. The
    harness's own broker is brokers[0]; workers get a broker list."""

    def __init__(self, nbrokers=2, **kw):
        self.nbrokers = nbrokers
        self.brokers = []  # [(front, back, Proc)]
        super().__init__(start=False, **kw)

    def start_brokers(self):
        self.start_redis()
        self.start_fake()
        for i in range(self.nbrokers):
            front = f"tcp://127.0.0.1:{harness.free_port()}"
            back = f"tcp://127.0.0.1:{harness.free_port()}"
            argv = [os.path.join(harness.BIN, "llmq-broker"), "--frontend", front,
                    "--backend", back, "--redis", self.redis_url(), *self.broker_args]
            p = harness.Proc(f"broker{i}", argv, self.path(f"broker{i}.log"))
            self.old_procs.append(p)  # stopped (and checked) at close
            self.brokers.append((front, back, p))

    def fronts(self, *idx):
        return ",".join(self.brokers[i][0] for i in idx)

    def backs(self, *idx):
        return ",".join(self.brokers[i][1] for i in idx)

    def start_workers(self, n, backs, extra=()):
        self.back = backs  # the harness passes --broker self.back
        for _ in range(n):
            self.start_worker(extra=list(extra))

    def via(self, front, *args, **kw):
        """llmq through the given broker list."""
        return self.llmq(*args, env_extra={"LLMQ_BROKER": front}, **kw)

    def workers_on(self, i):
        r = self.via(self.fronts(i), "workers", "--json", "--connect-timeout", "5")
        return len(harness.json.loads(r.stdout)["workers"]) if r.returncode == 0 else 0

    def wait_workers_on(self, i, n, timeout=20):
        self._wait(lambda: self.workers_on(i) >= n, f"{n} workers on broker {i}", timeout)


def check_exactly_once(test, out, n):
    ids = [x["custom_id"] for x in harness.read_jsonl(out)]
    dups = sum(1 for v in collections.Counter(ids).values() if v > 1)
    test.assertEqual(dups, 0, "no custom_id twice in the output")
    test.assertEqual(ids, [f"req-{i}" for i in range(n)], "one line per job, input order")


class SeveralBrokers(harness.ClusterTest):
    def test_batch_opened_on_one_broker_runs_on_another(self):
        self.c = c = Brokers(broker_args=FAST, fake_args=["--latency-ms", "5"])
        c.start_brokers()
        c.start_workers(2, c.backs(1), WORKER_FAST)  # workers only on broker 1
        c.wait_workers_on(1, 2)
        n = 2000
        inp = harness.gen_batch(c.path("in.jsonl"), n)
        # submit, wait and results through broker 0 only, which has no worker
        c.via(c.fronts(0), "run", inp, "-o", c.path("out.jsonl"), "--quiet", check=0,
              timeout=180)
        check_exactly_once(self, c.path("out.jsonl"), n)
        self.assertIn("joined", c.tail("broker1.log", 1000))
        self.assertNotIn("joined", c.tail("broker0.log", 1000), "broker 0 never had a worker")

    def test_cancel_on_one_broker_drops_prefetch_on_another(self):
        self.c = c = Brokers(broker_args=[*FAST, "--prefetch", "2000"],
                             fake_args=["--latency-ms", "200"])
        c.start_brokers()
        c.start_workers(2, c.backs(1), [*WORKER_FAST, "--concurrency", "10"])
        c.wait_workers_on(1, 2)
        n = 5000
        inp = harness.gen_batch(c.path("in.jsonl"), n)
        batch = c.via(c.fronts(0), "submit", inp, "--quiet", check=0).stdout.strip()

        def started():
            st = harness.json.loads(c.via(c.fronts(0), "status", batch, "--json",
                                          check=0).stdout)
            return st["request_counts"]["completed"] >= 20
        c._wait(started, "the batch to start on broker 1", 60)
        c.via(c.fronts(0), "cancel", batch, check=0)
        ran_at_cancel = sum(c.fake_get("/counts").values())

        def cancelled():
            st = harness.json.loads(c.via(c.fronts(0), "status", batch, "--json",
                                          check=0).stdout)
            return st["status"] == "cancelled"
        c._wait(cancelled, "the batch to reach cancelled", 60)
        ran_after = sum(c.fake_get("/counts").values()) - ran_at_cancel
        print(f"\ncancel on broker 0: {ran_after} requests started after it on broker 1 "
              f"(20 slots, prefetch 2000)", file=sys.stderr)
        # Without the refresh broker 1 would run its whole prefetch (2,000).
        self.assertLess(ran_after, 500, "broker 1 dropped its prefetched jobs")

    def test_kill9_of_the_clients_broker(self):
        n = int(os.environ.get("LLMQ_HA_JOBS", "20000"))
        self.c = c = Brokers(broker_args=FAST, concurrency=100,
                             fake_args=["--latency-ms", "50"])
        c.start_brokers()
        c.start_workers(4, c.backs(0, 1), WORKER_FAST)
        c._wait(lambda: c.workers_on(0) + c.workers_on(1) >= 4, "4 workers", 20)
        spread = (c.workers_on(0), c.workers_on(1))
        inp = harness.gen_batch(c.path("in.jsonl"), n)
        env = dict(os.environ, LLMQ_BROKER=c.fronts(0, 1))
        run = harness.subprocess.Popen(
            [os.path.join(harness.BIN, "llmq"), "run", inp, "-o", c.path("out.jsonl"),
             "--name", "ha-kill", "--retry-window", "120"],
            stdout=harness.subprocess.PIPE, stderr=harness.subprocess.PIPE, text=True,
            env=env, stdin=harness.subprocess.DEVNULL)
        victim = run.pid % 2  # rpc.c: a client starts at broker pid % count
        other = 1 - victim
        status = {}

        def progress():
            r = c.via(c.fronts(other), "list", "--json", "--connect-timeout", "5")
            if r.returncode != 0:
                return False
            for b in harness.json.loads(r.stdout)["data"]:
                if b.get("metadata", {}).get("name") == "ha-kill" or b.get("name") == "ha-kill":
                    status.update(b)
            return status.get("request_counts", {}).get("completed", 0) >= n // 10
        c._wait(progress, "a tenth of the batch done", 120)
        done_at_kill = status["request_counts"]["completed"]
        t_kill = time.time()
        c.brokers[victim][2].kill9()
        # progress after the kill, seen from the survivor (figure only)
        resumed = None
        while run.poll() is None and time.time() - t_kill < 300:
            r = c.via(c.fronts(other), "status", status["id"], "--json", "--connect-timeout", "5")
            if r.returncode == 0:
                done = harness.json.loads(r.stdout)["request_counts"]["completed"]
                if resumed is None and done > done_at_kill + 100:
                    resumed = time.time() - t_kill
            time.sleep(0.2)
        out, err = run.communicate(timeout=300)
        self.assertEqual(run.returncode, 0, err[-3000:])
        check_exactly_once(self, c.path("out.jsonl"), n)
        st = harness.json.loads(c.via(c.fronts(other), "status", status["id"], "--json",
                                      check=0).stdout)
        self.assertEqual(st["request_counts"]["completed"], n)
        counts = c.fake_get("/counts")
        twice = sum(1 for v in counts.values() if v > 1)
        self.assertEqual(len(counts), n, "every job reached the upstream")
        print(f"\nkill -9 of broker {victim} (the client's) at {done_at_kill}/{n} done; "
              f"workers per broker before {spread}; progress +100 after "
              f"{resumed if resumed is None else round(resumed, 2)} s; "
              f"{twice} jobs run twice; {st['llmq']['duplicates']} duplicate results dropped; "
              f"0 lost, 0 duplicate lines", file=sys.stderr)


class Proxy:
    """A loopback TCP proxy to Redis that the test can cut: a broker behind
    it is cut off from Redis while the others are not (no namespaces)."""

    def __init__(self, target_port):
        self.target = target_port
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.conns = []
        self.cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.cut:
            try:
                a, _ = self.lsock.accept()
            except OSError:
                return
            if self.cut:
                a.close()
                return
            b = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [a, b]
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pipe, args=(x, y), daemon=True).start()

    @staticmethod
    def _pipe(x, y):
        try:
            while True:
                d = x.recv(65536)
                if not d:
                    break
                y.sendall(d)
        except OSError:
            pass
        for s in (x, y):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut_off(self):
        """Refuses new connections and drops the open ones."""
        self.cut = True
        self.lsock.close()
        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass


def fnv1a64(text):
    """common/util.c lq_fnv1a64: which broker a worker id starts at."""
    h = 0xcbf29ce484222325
    for ch in text.encode():
        h = ((h ^ ch) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


class CutOff(harness.ClusterTest):
    def test_broker_cut_off_from_redis_workers_move(self):
        n = int(os.environ.get("LLMQ_HA_JOBS", "20000"))
        self.c = c = Brokers(broker_args=FAST, concurrency=100,
                             fake_args=["--latency-ms", "50"])
        c.start_redis()
        c.start_fake()
        proxy = Proxy(c.redis_port)
        urls = [f"redis://127.0.0.1:{proxy.port}/0", c.redis_url()]
        for i in range(2):
            front = f"tcp://127.0.0.1:{harness.free_port()}"
            back = f"tcp://127.0.0.1:{harness.free_port()}"
            p = harness.Proc(f"broker{i}", [os.path.join(harness.BIN, "llmq-broker"),
                                            "--frontend", front, "--backend", back,
                                            "--redis", urls[i], *FAST], c.path(f"broker{i}.log"))
            c.old_procs.append(p)
            c.brokers.append((front, back, p))
        # every worker starts at broker 0 (the list is ordered for its id)
        for i in range(4):
            wid = f"w{i}-{os.getpid()}"
            first = fnv1a64(wid) % 2
            order = (0, 1) if first == 0 else (1, 0)
            c.back = c.backs(*order)
            c.start_worker(extra=WORKER_FAST)
        c.wait_workers_on(0, 4)
        inp = harness.gen_batch(c.path("in.jsonl"), n)
        env = dict(os.environ, LLMQ_BROKER=c.fronts(0, 1))
        run = harness.subprocess.Popen(
            [os.path.join(harness.BIN, "llmq"), "run", inp, "-o", c.path("out.jsonl"),
             "--name", "ha-cut", "--retry-window", "120"],
            stdout=harness.subprocess.PIPE, stderr=harness.subprocess.PIPE, text=True,
            env=env, stdin=harness.subprocess.DEVNULL)

        def done():
            r = c.via(c.fronts(1), "list", "--json", "--connect-timeout", "5")
            for b in harness.json.loads(r.stdout)["data"] if r.returncode == 0 else []:
                if b.get("metadata", {}).get("name") == "ha-cut":
                    return b["request_counts"]["completed"], b["id"]
            return 0, None
        c._wait(lambda: done()[0] >= n // 10, "a tenth of the batch done", 120)
        at_cut = done()[0]
        t_cut = time.time()
        proxy.cut_off()
        c._wait(lambda: c.workers_on(1) >= 4, "the workers to move to broker 1", 90)
        moved = time.time() - t_cut
        out, err = run.communicate(timeout=300)
        self.assertEqual(run.returncode, 0, err[-3000:])
        check_exactly_once(self, c.path("out.jsonl"), n)
        self.assertIn("cut off from Redis", c.tail("broker0.log", 2000))
        counts = c.fake_get("/counts")
        self.assertEqual(len(counts), n)
        twice = sum(1 for v in counts.values() if v > 1)
        print(f"\nbroker 0 cut off from Redis at {at_cut}/{n} done: its 4 workers on broker 1 "
              f"after {moved:.1f} s (lease 3 s + 3 missed heartbeats of 300 ms); {twice} jobs "
              f"run twice; 0 lost, 0 duplicate lines", file=sys.stderr)


class Sentinel(harness.ClusterTest):
    def start_sentinels(self, c, n=3):
        """n sentinels watching c's Redis as master 'mq'."""
        binary = shutil.which("redis-sentinel")
        ports = []
        for i in range(n):
            port = harness.free_port()
            conf = c.path(f"sentinel{i}.conf")
            with open(conf, "w") as f:
                f.write(f"port {port}\nbind 127.0.0.1\ndir {c.dir}\n"
                        f"sentinel monitor mq 127.0.0.1 {c.redis_port} 2\n"
                        "sentinel down-after-milliseconds mq 1000\n"
                        "sentinel failover-timeout mq 5000\n")
                if harness.USE_ACL:  # Redis runs with deploy/redis/llmq.acl
                    f.write(f"sentinel auth-user mq admin\n"
                            f"sentinel auth-pass mq {harness.ADMIN_PASS}\n")
            argv = [binary, conf] if binary else ["redis-server", conf, "--sentinel"]
            c.old_procs.append(harness.Proc(f"sentinel{i}", argv, c.path(f"sentinel{i}.log")))
            ports.append(port)
        return ports

    def master_port(self, sport):
        r = harness.subprocess.run(["redis-cli", "-p", str(sport), "SENTINEL",
                                    "get-master-addr-by-name", "mq"],
                                   capture_output=True, text=True, timeout=10).stdout.split()
        return int(r[1]) if len(r) == 2 else None

    def test_master_kill9_with_replica_acks(self):
        n = int(os.environ.get("LLMQ_HA_SENTINEL_JOBS", "10000"))
        self.c = c = Brokers(nbrokers=1, concurrency=100, fake_args=["--latency-ms", "50"],
                             broker_args=FAST)
        c.start_redis()
        c.start_fake()
        master = c.redis
        rport = harness.free_port()
        os.mkdir(c.path("replica"))
        replica = harness.Proc("replica", ["redis-server", "--port", str(rport), "--bind",
                                           "127.0.0.1", "--save", "", "--dir", c.path("replica"),
                                           "--replicaof", "127.0.0.1", str(c.redis_port),
                                           *(["--aclfile", c.path("users.acl"), "--masteruser",
                                              "admin", "--masterauth", harness.ADMIN_PASS]
                                             if harness.USE_ACL else [])],
                               c.path("replica.log"))
        c.old_procs.append(replica)
        sports = self.start_sentinels(c)
        auth = (["--user", "admin", "--pass", harness.ADMIN_PASS, "--no-auth-warning"]
                if harness.USE_ACL else [])
        c._wait(lambda: "master_link_status:up" in harness.subprocess.run(
            ["redis-cli", "-p", str(rport), *auth, "INFO", "replication"], capture_output=True,
            text=True, timeout=10).stdout, "the replica to sync")
        c._wait(lambda: all(self.master_port(p) == c.redis_port for p in sports),
                "the sentinels to know the master")
        cred = (f"llmq:{c.redis_password}@"
                if harness.USE_ACL and c.redis_password else "")
        url = ("redis-sentinel://" + cred + ",".join(f"127.0.0.1:{p}" for p in sports) +
               "/mq/0")
        c.broker_args = [*FAST, "--redis-wait-replicas", "1", "--redis-wait-timeout-ms", "2000"]
        c.redis_url = lambda password=None: url
        front = f"tcp://127.0.0.1:{harness.free_port()}"
        back = f"tcp://127.0.0.1:{harness.free_port()}"
        bproc = harness.Proc("broker0", [os.path.join(harness.BIN, "llmq-broker"),
                                         "--frontend", front, "--backend", back,
                                         "--redis", url, *c.broker_args],
                             c.path("broker0.log"))
        c.old_procs.append(bproc)
        c.brokers.append((front, back, bproc))
        c.start_workers(2, back, WORKER_FAST)
        c.wait_workers_on(0, 2)
        inp = harness.gen_batch(c.path("in.jsonl"), n)
        # every chunk acknowledged = on the master and on the replica (WAIT 1)
        batch = c.via(front, "submit", inp, "--quiet", check=0).stdout.strip()

        def done():
            r = c.via(front, "status", batch, "--json", "--connect-timeout", "5")
            return (harness.json.loads(r.stdout)["request_counts"]["completed"]
                    if r.returncode == 0 else -1)
        c._wait(lambda: done() >= n // 10, "a tenth of the batch done", 120)
        at_kill = done()
        master.kill9()
        t_kill = time.time()
        c._wait(lambda: all(self.master_port(p) == rport for p in sports),
                "the sentinels' failover", 60)
        os.mkdir(c.path("old"))
        t_failover = time.time() - t_kill
        # the old server comes back as a replica of the new master (never as
        # an empty master: Redis's own advice without persistence), so that
        # WAIT 1 can be met again
        c.old_procs.append(harness.Proc("old-master", [
            "redis-server", "--port", str(c.redis_port), "--bind", "127.0.0.1", "--save", "",
            "--dir", c.path("old"), "--replicaof", "127.0.0.1", str(rport),
            *(["--aclfile", c.path("users.acl"), "--masteruser", "admin", "--masterauth",
               harness.ADMIN_PASS] if harness.USE_ACL else [])],
            c.path("old-master.log")))
        resumed = None
        while time.time() - t_kill < 120:
            d = done()
            if resumed is None and d > at_kill + 100:
                resumed = time.time() - t_kill
            if d >= n:
                break
            time.sleep(0.3)
        c.via(front, "wait", batch, "--quiet", "--retry-window", "120", check=0, timeout=300)
        c.via(front, "results", batch, "-o", c.path("out.jsonl"), "--quiet", check=0)
        check_exactly_once(self, c.path("out.jsonl"), n)
        st = harness.json.loads(c.via(front, "status", batch, "--json", check=0).stdout)
        self.assertEqual(st["request_counts"]["completed"], n)
        counts = c.fake_get("/counts")
        twice = sum(1 for v in counts.values() if v > 1)
        print(f"\nkill -9 of the Redis master at {at_kill}/{n} done: sentinels failed over "
              f"after {t_failover:.1f} s, progress +100 after "
              f"{resumed if resumed is None else round(resumed, 1)} s; {twice} jobs run twice; "
              f"{st['llmq']['duplicates']} duplicate results dropped; 0 lost, 0 duplicate lines",
              file=sys.stderr)


if __name__ == "__main__":
    harness.main()
