#!/usr/bin/python3
"""llmq benchmarks: llmq against an asyncio script, Celery and wrk, on loopback.

    bench/run.py [--bin DIR] [--quick] [--only SCENARIO,...] [--json PATH]
                 [--report PATH] [--no-profile]
    bench/run.py --report-only [--json PATH]

Starts redis-server, llmq-fake-upstream, llmq-broker and llmq-workers on free
127.0.0.1 ports through tests/system/harness.py, runs every scenario for llmq
and the baselines (bench/baseline_asyncio.py, bench/baseline_celery.py, wrk
with bench/wrk_post.lua) against the same fake upstream binary with the same
flags and the same input files, prints a summary, writes the raw figures to
bench/results/latest.json and the report (tables, gnuplot PNGs) to
docs/benchmarks.md via bench/report.py.

Scenarios (names for --only): wrk, throughput, latency, scale_n,
scale_workers, faults, rate_limited, rate_shapes, cost, profile. BENCH_QUICK=1 (or --quick)
runs a ~3-minute smoke version with smaller job counts.

Every measured process is sampled from /proc: CPU seconds (utime+stime),
peak RSS (VmHWM), context switches. The client (llmq, the asyncio script,
the Celery driver) runs under /usr/bin/time, which gives its CPU time and
peak RSS. Must run under Debian's /usr/bin/python3 (python3-aiohttp,
python3-celery, python3-redis).
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))
import harness  # noqa: E402

PY = "/usr/bin/python3"
TCK = os.sysconf("SC_CLK_TCK")

FULL = dict(
    wrk_conns=[64, 256], wrk_secs=5,
    tp_n=100_000, tp_reps=3, tp_workers=2, tp_conc=256,
    asy_tp_n=100_000, asy_tp_conc=100, bas_reps=2,
    cel_tp_n=10_000, cel_probe_n=3000,
    cel_pools=[("prefork", 2), ("prefork", 4), ("threads", 8), ("threads", 32)],
    lat_n=20_000, lat_ms=100, lat_conc=1000, lat_reps=3, asy_lat_n=20_000, cel_lat_n=10_000,
    scale_ns=[1000, 10_000, 100_000, 1_000_000], asy_scale_ns=[1000, 10_000, 100_000],
    workers_list=[1, 2, 4], wk_n=100_000, wk_lat_n=20_000, wk_lat_conc=250,
    flt_n=20_000, flt_ms=50, flt_conc=100, cel_flt_n=5000,
    rl_rate=1000, rl_n=10_000, cel_rl_n=5000,
    sh_rate=500, sh_n=5000,
    tls_n=20_000, tls_conc=250, asy_tls_n=10_000,
    prof_n=100_000, quiet_budget_s=150,
    cost_n=100_000, cost_reps=3, ins_n=10_000, ins_reps=3, thou_n=10_000, thou_slots=5000, fifty_n=10_000,
)
QUICK = dict(
    wrk_conns=[64, 256], wrk_secs=2,
    tp_n=20_000, tp_reps=1, tp_workers=2, tp_conc=256,
    asy_tp_n=20_000, asy_tp_conc=100, bas_reps=1,
    cel_tp_n=2000, cel_probe_n=0, cel_pools=[("prefork", 2)],
    lat_n=20_000, lat_ms=100, lat_conc=1000, lat_reps=1, asy_lat_n=10_000, cel_lat_n=2000,
    scale_ns=[1000, 10_000, 50_000], asy_scale_ns=[1000, 10_000],
    workers_list=[1, 2, 4], wk_n=20_000, wk_lat_n=5000, wk_lat_conc=250,
    flt_n=5000, flt_ms=50, flt_conc=100, cel_flt_n=1000,
    rl_rate=1000, rl_n=3000, cel_rl_n=1000,
    sh_rate=500, sh_n=2000,
    tls_n=5000, tls_conc=250, asy_tls_n=2000,
    prof_n=0, quiet_budget_s=30,
    cost_n=20_000, cost_reps=1, ins_n=2000, ins_reps=1, thou_n=10_000, thou_slots=5000, fifty_n=10_000,
)
ALL = ["wrk", "throughput", "latency", "scale_n", "scale_workers", "faults", "rate_limited",
       "rate_shapes", "tls", "cost", "profile"]


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- /proc ----
def proc_stat(pid):
    """CPU seconds, peak RSS (KB) and context switches of a live process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            x = f.read().rsplit(")", 1)[1].split()
        d = {"cpu_s": (int(x[11]) + int(x[12])) / TCK}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k == "VmHWM":
                    d["hwm_kb"] = int(v.split()[0])
                elif k == "VmRSS":
                    d["rss_kb"] = int(v.split()[0])
                elif k == "voluntary_ctxt_switches":
                    d["vcs"] = int(v)
                elif k == "nonvoluntary_ctxt_switches":
                    d["nvcs"] = int(v)
        return d
    except (OSError, IndexError, ValueError):
        return None


def sys_busy():
    """Busy CPU seconds of the whole machine (all CPUs) so far."""
    with open("/proc/stat") as f:
        x = [int(v) for v in f.readline().split()[1:]]
    idle = x[3] + (x[4] if len(x) > 4 else 0)
    return (sum(x[:8]) - idle) / TCK


class Quiet:
    """Waits, within a budget for the whole run, until the machine is quiet
    (other engineers' builds and tests share it) before a measurement."""

    def __init__(self, budget_s):
        self.budget, self.waited = budget_s, 0.0

    def wait(self, max_s=20.0, busy_cores=0.3):
        t0 = time.monotonic()
        while self.waited + (time.monotonic() - t0) < self.budget:
            b0, w0 = sys_busy(), time.monotonic()
            time.sleep(0.5)
            if (sys_busy() - b0) / (time.monotonic() - w0) < busy_cores:
                break
            if time.monotonic() - t0 > max_s:
                break
        self.waited += time.monotonic() - t0


def cluster_procs(c):
    d = {"broker": c.broker, "redis": c.redis, "fake": c.fake}
    for i, w in enumerate(c.workers):
        d[f"worker{i}"] = w
    return {k: p for k, p in d.items() if p is not None and p.alive()}


def snapshot(procs):
    out = {}
    for k, p in procs.items():
        st = proc_stat(p.p.pid)
        if st:
            st["pid"] = p.p.pid
        out[k] = st
    return out


def delta(before, after):
    out = {}
    for k, a in after.items():
        b = before.get(k)
        if not a or not b or a.get("pid") != b.get("pid"):
            continue  # restarted during the run (faults): no meaningful delta
        out[k] = {"cpu_s": round(a["cpu_s"] - b["cpu_s"], 3), "hwm_kb": a.get("hwm_kb"),
                  "ctxsw": (a.get("vcs", 0) + a.get("nvcs", 0)) - (b.get("vcs", 0) + b.get("nvcs", 0))}
    return out


# -------------------------------------------------------------- helpers ----
def fake_get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as r:
        return json.loads(r.read())


def fake_reset(port):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/reset", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()


class Sampler(threading.Thread):
    """Polls the fake's /stats every `every` s: (t, requests, 200s, 429s)."""

    def __init__(self, port, t0, every=0.1):
        super().__init__(daemon=True)
        self.port, self.t0, self.every = port, t0, every
        self.samples, self.stop_ev = [], threading.Event()
        self.last = {}

    def run(self):
        while not self.stop_ev.is_set():
            try:
                s = fake_get(self.port, "/stats")
                self.last = s
                bs = s.get("by_status", {})
                self.samples.append((round(time.monotonic() - self.t0, 3), s["requests"],
                                     bs.get("200", 0), bs.get("429", 0)))
            except OSError:
                pass
            self.stop_ev.wait(self.every)

    def stop(self):
        self.stop_ev.set()
        self.join()
        return self.samples

    def wait_requests(self, n, timeout=300):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.last.get("requests", 0) >= n:
                return True
            time.sleep(0.02)
        return False


class DoneWatcher(threading.Thread):
    """Polls Redis every 20 ms for the first batch in state completed: the time
    at which every result was durable in Redis (before the client noticed)."""

    def __init__(self, redis_port, t0):
        super().__init__(daemon=True)
        import redis
        auth = ({"username": "admin", "password": harness.ADMIN_PASS} if harness.USE_ACL
                else {})
        self.r = redis.Redis(port=redis_port, decode_responses=True, **auth)
        self.t0, self.done_s, self.stop_ev = t0, None, threading.Event()

    def run(self):
        while not self.stop_ev.is_set() and self.done_s is None:
            try:
                for b in self.r.zrange("llmq:batches", 0, -1):
                    if self.r.hget(f"llmq:b:{b}", "state") == "completed":
                        self.done_s = round(time.monotonic() - self.t0, 3)
            except Exception:
                pass
            self.stop_ev.wait(0.02)

    def stop(self):
        self.stop_ev.set()
        self.join()
        return self.done_s


def downsample(samples, maxn=400):
    if len(samples) <= maxn:
        return samples
    step = len(samples) / maxn
    return [samples[int(i * step)] for i in range(maxn)] + [samples[-1]]


def check_output(path, n):
    """Counts output lines, distinct custom_ids, successes, duplicates, lost."""
    ids, lines, ok = set(), 0, 0
    if os.path.exists(path):
        with open(path, "rb") as f:
            for line in f:
                lines += 1
                i = line.find(b'"custom_id":"')
                j = line.find(b'"', i + 13)
                ids.add(line[i + 13:j])
                if line.rstrip().endswith(b'"error":null}'):
                    ok += 1
    return {"lines": lines, "distinct": len(ids), "ok": ok, "failed": lines - ok,
            "duplicate_lines": lines - len(ids), "lost": n - len(ids)}


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def timed_popen(argv, tfile, **kw):
    """Starts argv under /usr/bin/time, which records the peak RSS and CPU of
    that process alone. (The bench's own wait4() rusage would not do: Linux
    carries the RSS high-water mark of the forking Python process over
    exec, so ru_maxrss of a direct child is at least the bench's own RSS.)"""
    return subprocess.Popen(["/usr/bin/time", "-f", "%M %U %S", "-o", tfile, *argv], **kw)


def timed_wait(p, tfile):
    """Waits for a timed_popen() child; returns (exit status, cpu_s, maxrss_kb)."""
    rc = p.wait()
    if rc > 128:
        rc = -(rc - 128)  # killed by a signal (GNU time exits 128 + signal)
    try:
        with open(tfile) as f:
            kb, u, sy = f.read().strip().splitlines()[-1].split()
        return rc, round(float(u) + float(sy), 3), int(kb)
    except (OSError, ValueError, IndexError):
        return rc, 0.0, 0


def timed_child(p):
    """PID of the command that /usr/bin/time runs (for kill -9)."""
    for _ in range(100):
        try:
            with open(f"/proc/{p.pid}/task/{p.pid}/children") as f:
                kids = f.read().split()
            if kids:
                return int(kids[0])
        except OSError:
            pass
        time.sleep(0.01)
    return None


def median_run(runs, key="jobs_per_s"):
    vals = sorted(r[key] for r in runs)
    med = statistics.median(vals)
    return min(runs, key=lambda r: abs(r[key] - med))


# ---------------------------------------------------------------- bench ----
class Bench:
    def __init__(self, a, P):
        self.a, self.P = a, P
        self.bin = a.bin
        harness.BIN = a.bin
        self.tmp = tempfile.mkdtemp(prefix="llmq-bench-")
        self.inputs = {}
        self.res = {}
        self.quiet = Quiet(P["quiet_budget_s"])

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- inputs ----
    def input(self, n):
        """Path of an n-line input file (req-1..req-n), generated once."""
        if n in self.inputs:
            return self.inputs[n]
        big = max([k for k in self.inputs if k >= n], default=None)
        path = os.path.join(self.tmp, f"in-{n}.jsonl")
        if big:
            with open(self.inputs[big], "rb") as src, open(path, "wb") as dst:
                for i, line in enumerate(src):
                    if i >= n:
                        break
                    dst.write(line)
        else:
            subprocess.run([PY, os.path.join(HERE, "gen_batch.py"), str(n), path], check=True)
        self.inputs[n] = path
        return path

    def prepare_inputs(self, ns):
        for n in sorted(set(ns), reverse=True):
            self.input(n)

    # ---- clusters ----
    def cluster(self, workers, conc, fake=(), broker=(), aof=False):
        self.quiet.wait()
        return harness.Cluster(workers=workers, concurrency=conc, aof=aof,
                               fake_args=["--log-level", "warn", *fake],
                               broker_args=["--log-level", "warn", *broker],
                               worker_args=["--log-level", "warn", "--stats-interval", "0"])

    # ---- llmq ----
    def llmq_run(self, n, workers, conc, fake=(), broker=(), client=(), series=False,
                 during=None, label="", aof=False):
        """One `llmq run` on a fresh cluster; returns a dict of figures."""
        c = self.cluster(workers, conc, fake, broker, aof)
        try:
            inp = self.input(n)
            out = c.path("out.jsonl")
            procs = cluster_procs(c)
            c.redis_cli("CONFIG", "RESETSTAT")
            before = snapshot(procs)
            env = dict(os.environ, LLMQ_BROKER=c.front)
            busy0, self0 = sys_busy(), time.process_time()
            t0 = time.monotonic()
            samp = Sampler(c.fake_port, t0, 0.1 if n >= 20000 else 0.05)
            samp.start()
            done = DoneWatcher(c.redis_port, t0)
            done.start()
            tfile = c.path("client.time")
            with open(c.path("client.out"), "wb") as fo, open(c.path("client.err"), "wb") as fe:
                p = timed_popen([os.path.join(self.bin, "llmq"), "run", inp, "-o", out,
                                 "--quiet", *client], tfile, env=env, stdout=fo, stderr=fe,
                                stdin=subprocess.DEVNULL)
            try:
                events = during(c, samp, t0) if during else None
            except BaseException:
                p.kill()
                p.wait()
                raise
            rc, ccpu, crss = timed_wait(p, tfile)
            wall = time.monotonic() - t0
            busy, selfcpu = sys_busy() - busy0, time.process_time() - self0
            stdout, stderr = read_text(c.path("client.out")), read_text(c.path("client.err"))
            done_s = done.stop()
            after = snapshot(cluster_procs(c))
            samples = samp.stop()
            fstats = fake_get(c.fake_port, "/stats")
            r = {"system": "llmq", "n": n, "workers": workers, "concurrency": conc, "aof": aof,
                 "wall_s": round(wall, 3), "done_s": done_s, "rc": rc,
                 "jobs_per_s": round(n / wall, 1), "out": check_output(out, n),
                 "fake": {k: fstats.get(k) for k in ("requests", "by_status", "dropped")},
                 "procs": delta(before, after),
                 "client": {"cpu_s": ccpu, "hwm_kb": crss}}
            ours = ccpu + sum(v["cpu_s"] for v in r["procs"].values())
            r["machine_cpu_s"] = round(busy, 2)
            r["bench_cpu_s"] = round(selfcpu, 2)
            r["other_cpu_s"] = round(max(0.0, busy - ours - selfcpu), 2)
            r["redis"] = self.redis_info(c)
            if series:
                r["series"] = downsample(samples)
            if events is not None:
                r["events"] = events
            if rc not in (0, 3):
                r["stderr"] = stderr[-2000:]
                log(f"llmq run exited {rc}: {stderr[-500:]}")
            batch = stdout.strip().splitlines()[-1] if stdout.strip() else None
            if batch:
                st = c.llmq("status", batch, "--json")
                if st.returncode == 0:
                    try:
                        j = json.loads(st.stdout)
                        r["status"] = {"counts": j.get("request_counts"),
                                       **{k: j.get("llmq", {}).get(k)
                                          for k in ("retried", "duplicates")}}
                    except ValueError:
                        pass
            log(f"  llmq {label} n={n} w={workers}x{conc}: {r['wall_s']:.2f} s "
                f"({r['jobs_per_s']:.0f} jobs/s, done in Redis at {done_s}) rc={rc} "
                f"lost={r['out']['lost']} failed={r['out']['failed']}")
            return r
        finally:
            c.close()

    def redis_info(self, c):
        d = {}
        for line in c.redis_cli("INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_evalsha:"):
                kv = dict(x.split("=") for x in line.split(":", 1)[1].split(","))
                d["evalsha_calls"] = int(kv["calls"])
                d["evalsha_usec"] = int(kv["usec"])
        total, calls = 0, {}
        for line in c.redis_cli("INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_"):
                name, _, rest = line.partition(":")
                kv = dict(x.split("=") for x in rest.split(","))
                total += int(kv["usec"])
                calls[name[len("cmdstat_"):]] = int(kv["calls"])
        d["all_usec"] = total
        # commands run inside the scripts are counted too: calls per job
        d["calls"] = dict(sorted(calls.items(), key=lambda kv: -kv[1])[:16])
        for line in c.redis_cli("INFO", "memory").splitlines():
            if line.startswith("used_memory_peak:"):
                d["used_memory_peak"] = int(line.split(":")[1])
        return d

    # ---- asyncio baseline ----
    def asyncio_run(self, n, conc, fake=(), series=False, kill_at=None, label=""):
        c = self.cluster(0, 1, fake)
        try:
            inp, out = self.input(n), c.path("out.jsonl")
            fake_reset(c.fake_port)
            before = snapshot({"fake": c.fake, "redis": c.redis, "broker": c.broker})
            busy0, self0 = sys_busy(), time.process_time()
            t0 = time.monotonic()
            samp = Sampler(c.fake_port, t0)
            samp.start()
            tfile = c.path("client.time")
            with open(c.path("client.out"), "wb") as fo, open(c.path("client.err"), "wb") as fe:
                p = timed_popen([PY, os.path.join(HERE, "baseline_asyncio.py"), inp, out,
                                 "--base-url", f"http://127.0.0.1:{c.fake_port}",
                                 "--concurrency", str(conc)], tfile, stdout=fo, stderr=fe,
                                stdin=subprocess.DEVNULL)
            killed = None
            if kill_at:
                child = timed_child(p)
                samp.wait_requests(int(kill_at * n))
                os.kill(child, signal.SIGKILL)
                killed = {"at_s": round(time.monotonic() - t0, 3),
                          "requests_before_kill": samp.last.get("requests")}
            rc, ccpu, crss = timed_wait(p, tfile)
            wall = time.monotonic() - t0
            busy, selfcpu = sys_busy() - busy0, time.process_time() - self0
            samples = samp.stop()
            after = snapshot({"fake": c.fake, "redis": c.redis, "broker": c.broker})
            fstats = fake_get(c.fake_port, "/stats")
            try:
                summary = json.loads(read_text(c.path("client.out")).strip().splitlines()[-1])
            except (ValueError, IndexError):
                summary = None
            r = {"system": "asyncio", "n": n, "concurrency": conc, "wall_s": round(wall, 3),
                 "jobs_per_s": round(n / wall, 1), "rc": rc, "out": check_output(out, n),
                 "summary": summary,
                 "fake": {k: fstats.get(k) for k in ("requests", "by_status", "dropped")},
                 "procs": delta(before, after), "client": {"cpu_s": ccpu, "hwm_kb": crss}}
            ours = ccpu + sum(v["cpu_s"] for v in r["procs"].values())
            r["machine_cpu_s"] = round(busy, 2)
            r["bench_cpu_s"] = round(selfcpu, 2)
            r["other_cpu_s"] = round(max(0.0, busy - ours - selfcpu), 2)
            if killed:
                r["killed"] = killed
            if series:
                r["series"] = downsample(samples)
            log(f"  asyncio {label} n={n} c={conc}: {r['wall_s']:.2f} s "
                f"({r['jobs_per_s']:.0f} jobs/s) rc={rc} lost={r['out']['lost']} "
                f"peak RSS {crss / 1024:.0f} MB")
            return r
        finally:
            c.close()

    # ---- Celery baseline ----
    def celery_run(self, n, pools, fake=(), series=False, kill_at=None, idle_timeout=600,
                   label=""):
        """pools: list of (pool, concurrency), one Celery worker process each."""
        c = self.cluster(0, 1, fake)
        try:
            inp, out = self.input(n), c.path("out.jsonl")
            env = dict(os.environ, BENCH_CELERY_REDIS=f"redis://127.0.0.1:{c.redis_port}/1",
                       BENCH_UPSTREAM=f"http://127.0.0.1:{c.fake_port}",
                       PYTHONPATH=HERE)
            ws = []

            def start_worker(i, pool, conc):
                return harness.Proc(
                    f"celery{i}", [PY, os.path.join(HERE, "baseline_celery.py"), "worker",
                                   "--pool", pool, "--concurrency", str(conc),
                                   "--hostname", f"w{i}@bench"],
                    c.path(f"celery{i}.log"), env=env)
            for i, (pool, conc) in enumerate(pools):
                ws.append(start_worker(i, pool, conc))
            self.wait_celery(c, len(pools))
            fake_reset(c.fake_port)
            t0 = time.monotonic()
            samp = Sampler(c.fake_port, t0)
            samp.start()
            tfile = c.path("client.time")
            with open(c.path("client.out"), "wb") as fo, open(c.path("client.err"), "wb") as fe:
                p = timed_popen([PY, os.path.join(HERE, "baseline_celery.py"), "drive", inp,
                                 out, "--timeout", "900", "--idle-timeout", str(idle_timeout)],
                                tfile, env=env, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
            killed = None
            if kill_at:
                samp.wait_requests(int(kill_at * n))
                ws[0].kill9()
                killed = {"at_s": round(time.monotonic() - t0, 3)}
                pool, conc = pools[0]
                ws.append(start_worker(len(ws), pool, conc))
            rc, ccpu, crss = timed_wait(p, tfile)
            wall = time.monotonic() - t0
            samples = samp.stop()
            fstats = fake_get(c.fake_port, "/stats")
            wcpu = 0.0
            for w in ws:
                if w.alive():
                    wcpu += self.tree_cpu(w.p.pid)
                w.stop()
            try:
                summary = json.loads(read_text(c.path("client.out")).strip().splitlines()[-1])
            except (ValueError, IndexError):
                summary = None
            r = {"system": "celery", "n": n, "pools": pools, "wall_s": round(wall, 3),
                 "jobs_per_s": round(n / wall, 1), "rc": rc, "out": check_output(out, n),
                 "summary": summary, "workers_cpu_s": round(wcpu, 2),
                 "fake": {k: fstats.get(k) for k in ("requests", "by_status", "dropped")},
                 "client": {"cpu_s": ccpu, "hwm_kb": crss}}
            if summary and summary.get("last_result_s"):
                # with an idle timeout the driver waits for lost results: time to
                # the last result is the fair figure
                r["last_result_s"] = summary["last_result_s"]
                if kill_at or r["out"]["lost"]:
                    r["jobs_per_s"] = round(n / summary["last_result_s"], 1)
            if killed:
                r["killed"] = killed
            if series:
                r["series"] = downsample(samples)
            log(f"  celery {label} n={n} {pools}: {r['wall_s']:.2f} s "
                f"({r['jobs_per_s']:.0f} jobs/s) rc={rc} lost={r['out']['lost']}")
            return r
        finally:
            c.close()

    def tree_cpu(self, pid):
        """CPU seconds of pid and its children (prefork pool)."""
        total = 0.0
        pids = [pid]
        try:
            out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                                 text=True).stdout
            pids += [int(x) for x in out.split()]
        except (OSError, ValueError):
            pass
        for q in pids:
            s = proc_stat(q)
            if s:
                total += s["cpu_s"]
        return total

    def wait_celery(self, c, n, timeout=30):
        """Waits until n Celery workers consume from the queue."""
        import redis
        r = redis.Redis(port=c.redis_port, db=1)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                clients = r.client_list()
                # each worker holds a BRPOP on the 'celery' list once it consumes
                if sum(1 for x in clients if x.get("cmd") == "brpop") >= n:
                    time.sleep(0.3)
                    return
            except Exception:
                pass
            time.sleep(0.1)
        log("  warning: Celery workers not seen consuming; going on")

    # ---------------------------------------------------------- scenarios --
    def wrk_once(self, url, conns, secs, fake_proc=None):
        """One wrk run of secs seconds with conns connections against url."""
        before = snapshot({"fake": fake_proc}) if fake_proc else None
        r = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{secs}s",
                            "-s", os.path.join(HERE, "wrk_post.lua"), url],
                           capture_output=True, text=True)
        rps = lat = None
        for line in r.stdout.splitlines():
            if line.startswith("Requests/sec:"):
                rps = float(line.split()[1])
            if line.strip().startswith("Latency"):
                lat = line.split()[1]
        out = {"connections": conns, "req_per_s": rps, "latency_avg": lat}
        if fake_proc:
            cpu = delta(before, snapshot({"fake": fake_proc}))["fake"]["cpu_s"]
            out["fake_cpu_per_s"] = round(cpu / secs, 2)
        return out

    def s_wrk(self):
        P = self.P
        c = self.cluster(0, 1)
        try:
            url = f"http://127.0.0.1:{c.fake_port}"
            runs = []
            for conns in P["wrk_conns"]:
                fake_reset(c.fake_port)
                x = self.wrk_once(url, conns, P["wrk_secs"], c.fake)
                runs.append(x)
                log(f"  wrk -c{conns}: {x['req_per_s']} req/s "
                    f"(fake CPU {x['fake_cpu_per_s']:.0%})")
            return {"runs": runs, "max_req_per_s": max(x["req_per_s"] or 0 for x in runs)}
        finally:
            c.close()

    def s_throughput(self):
        P = self.P
        r = {"n": P["tp_n"]}
        runs = [self.llmq_run(P["tp_n"], P["tp_workers"], P["tp_conc"], series=True,
                              label=f"rep {i + 1}") for i in range(P["tp_reps"])]
        r["llmq_runs"] = runs
        r["llmq"] = median_run(runs)
        # baselines: best of bas_reps (the conservative choice for llmq's ratios)
        r["asyncio_runs"] = [self.asyncio_run(P["asy_tp_n"], P["asy_tp_conc"], series=True,
                                              label=f"rep {i + 1}")
                             for i in range(P["bas_reps"])]
        r["asyncio"] = max(r["asyncio_runs"], key=lambda x: x["jobs_per_s"])
        probes = []
        if P["cel_probe_n"]:
            for pool in P["cel_pools"]:
                probes.append(self.celery_run(P["cel_probe_n"], [pool], label="probe"))
            best = max(probes, key=lambda x: x["jobs_per_s"])
            pools = best["pools"]
        else:
            pools = list(P["cel_pools"][:1])
        r["celery_probes"] = [{"pools": x["pools"], "n": x["n"], "jobs_per_s": x["jobs_per_s"]}
                              for x in probes]
        r["celery_runs"] = [self.celery_run(P["cel_tp_n"], pools, series=True,
                                            label=f"rep {i + 1}")
                            for i in range(P["bas_reps"])]
        r["celery"] = max(r["celery_runs"], key=lambda x: x["jobs_per_s"])
        return r

    def s_latency(self):
        P = self.P
        fake = ["--latency-ms", str(P["lat_ms"])]
        half = P["lat_conc"] // 2
        r = {"n": P["lat_n"], "latency_ms": P["lat_ms"], "concurrency": P["lat_conc"],
             "ideal_s": P["lat_n"] / P["lat_conc"] * P["lat_ms"] / 1000}
        runs = [self.llmq_run(P["lat_n"], 2, half, fake=fake, series=True,
                              label=f"latency rep {i + 1}") for i in range(P["lat_reps"])]
        r["llmq_runs"] = runs
        r["llmq"] = median_run(runs)
        r["asyncio"] = self.asyncio_run(P["asy_lat_n"], P["lat_conc"], fake=fake, series=True,
                                        label="latency")
        r["asyncio"]["ideal_s"] = P["asy_lat_n"] / P["lat_conc"] * P["lat_ms"] / 1000
        r["celery"] = self.celery_run(P["cel_lat_n"], [("threads", half), ("threads", half)],
                                      fake=fake, series=True, label="latency")
        r["celery"]["ideal_s"] = P["cel_lat_n"] / P["lat_conc"] * P["lat_ms"] / 1000
        return r

    def s_scale_n(self):
        P = self.P
        r = {"llmq": [], "asyncio": []}
        for n in P["scale_ns"]:
            r["llmq"].append(self.llmq_run(n, P["tp_workers"], P["tp_conc"], label="scale"))
        tp = self.res.get("throughput", {}).get("asyncio")
        for n in P["asy_scale_ns"]:
            if tp and tp["n"] == n:
                r["asyncio"].append(tp)
            else:
                r["asyncio"].append(self.asyncio_run(n, P["asy_tp_conc"], label="scale"))
        return r

    def s_scale_workers(self):
        P = self.P
        r = {"n": P["wk_n"], "lat_n": P["wk_lat_n"], "lat_conc": P["wk_lat_conc"],
             "zero": [], "latency": []}
        for w in P["workers_list"]:
            r["zero"].append(self.llmq_run(P["wk_n"], w, P["tp_conc"], label="workers 0ms"))
        for w in P["workers_list"]:
            x = self.llmq_run(P["wk_lat_n"], w, P["wk_lat_conc"],
                              fake=["--latency-ms", "100"], label="workers 100ms")
            x["ideal_s"] = P["wk_lat_n"] / (w * P["wk_lat_conc"]) * 0.1
            r["latency"].append(x)
        return r

    def s_faults(self):
        P = self.P
        n = P["flt_n"]
        fake = ["--latency-ms", str(P["flt_ms"]), "--fail-500", "0.05", "--drop", "0.01"]

        def during(c, samp, t0):
            ev = []
            samp.wait_requests(int(0.25 * n))
            c.workers[0].kill9()
            ev.append({"t": round(time.monotonic() - t0, 3), "what": "kill -9 worker0"})
            c.start_worker()
            ev.append({"t": round(time.monotonic() - t0, 3), "what": "replacement worker started"})
            samp.wait_requests(int(0.5 * n))
            c.broker.kill9()
            ev.append({"t": round(time.monotonic() - t0, 3), "what": "kill -9 broker"})
            time.sleep(1.0)
            c.start_broker()
            ev.append({"t": round(time.monotonic() - t0, 3), "what": "broker restarted"})
            return ev
        r = {"n": n, "fake_args": fake}
        r["llmq"] = self.llmq_run(n, 2, P["flt_conc"], fake=fake, series=True, during=during,
                                  label="faults")
        r["asyncio"] = self.asyncio_run(n, 2 * P["flt_conc"], fake=fake, series=True,
                                        label="faults")
        r["asyncio_killed"] = self.asyncio_run(n, 2 * P["flt_conc"], fake=fake, kill_at=0.5,
                                               label="faults, kill -9 at 50%")
        r["celery"] = self.celery_run(P["cel_flt_n"], [("threads", P["flt_conc"])] * 2,
                                      fake=fake, series=True, kill_at=0.5, idle_timeout=20,
                                      label="faults, kill -9 one worker at 50%")
        for k in ("llmq", "asyncio", "celery"):
            x = r[k]
            ok200 = (x["fake"]["by_status"] or {}).get("200", 0)
            x["paid_twice"] = ok200 - x["out"]["ok"]
        return r

    def s_rate_limited(self):
        P = self.P
        n, rate = P["rl_n"], P["rl_rate"]
        fake = ["--rate-limit", str(rate), "--retry-after-format", "seconds"]
        r = {"n": n, "rate": rate, "ideal_s": n / rate, "fake_args": fake}
        r["llmq"] = self.llmq_run(n, 2, P["tp_conc"], fake=fake, series=True,
                                  label="rate-limited, discovering")
        r["llmq_configured"] = self.llmq_run(n, 2, P["tp_conc"], fake=fake, series=True,
                                             broker=["--limit", f"default:rpm={rate * 60}"],
                                             label="rate-limited, --limit rpm")
        r["asyncio"] = self.asyncio_run(n, P["asy_tp_conc"], fake=fake, series=True,
                                        label="rate-limited")
        r["celery"] = self.celery_run(P["cel_rl_n"], [("prefork", 2)], fake=fake, series=True,
                                      idle_timeout=60, label="rate-limited")
        r["celery"]["ideal_s"] = P["cel_rl_n"] / rate
        return r

    def s_rate_shapes(self):
        """Issue 12: llmq (no --limit) and asyncio against each limiter shape,
        plus the simulator's exact figures (bench/rl_sim_main.c)."""
        P = self.P
        n, rate = P["sh_n"], P["sh_rate"]
        base = ["--rate-limit", str(rate), "--latency-ms", "20"]
        tokens = tokens_of(self.input(n))
        tps = int(rate * 0.5 * tokens / n)  # binds at half the request limit
        cold_s = 1.0
        shapes = [
            ("bucket", "1: bucket, burst 50, 429 + Retry-After: 1, no headers",
             ["--burst", "50", "--headers", "none", "--retry-after-fixed-ms", "1000"],
             n / rate),
            ("openai", "2: OpenAI-style headers, retry-after-ms", ["--headers", "openai"],
             n / rate),
            ("anthropic", "3: Anthropic-style headers, retry-after (s)",
             ["--headers", "anthropic"], n / rate),
            ("tokens", f"4: {tps:,} tokens/s binds first (req limit {rate}/s)",
             ["--token-limit", str(tps)], tokens / tps),
            ("cold", "5: 429 without headers for the first 1 s",
             ["--cold-ms", str(int(cold_s * 1000)), "--headers", "none"], cold_s + n / rate),
            ("steps", f"6: {rate}/s, {rate // 2}/s from 4 s, {rate}/s from 9 s, no headers",
             ["--rate-steps", f"4000:{rate // 2},9000:{rate}", "--headers", "none"],
             steps_ideal(n, rate, [(4, rate / 2), (9, rate)])),
        ]
        r = {"n": n, "rate": rate, "shapes": []}
        for key, what, fake, ideal in shapes:
            x = {"key": key, "what": what, "fake_args": base + fake, "ideal_s": round(ideal, 3)}
            x["llmq"] = self.llmq_run(n, 2, P["tp_conc"], fake=base + fake, series=True,
                                      label=f"shape {key}")
            x["asyncio"] = self.asyncio_run(n, P["asy_tp_conc"], fake=base + fake, series=True,
                                            label=f"shape {key}")
            r["shapes"].append(x)
        r["two"] = self.two_upstreams(n, rate, base)
        r["sim"], r["sim_traces"] = rl_sim(self.bin, self.tmp)
        return r

    def s_tls(self):
        """HTTPS through a local nginx TLS front (HTTP/1.1 and HTTP/2): one
        llmq-worker fed by the minimal driver beside the asyncio script, and
        the worker's instructions per request (callgrind), see
        bench/worker_tls.py and bench/worker_callgrind.py."""
        P = self.P
        sys.path.insert(0, HERE)
        import worker_tls
        import worker_callgrind
        self.quiet.wait()
        r = worker_tls.measure(self.bin, P["tls_n"], P["tls_conc"], P["asy_tls_n"], log=log)
        if shutil.which("valgrind"):
            r["callgrind"] = {}
            for proto in ("plain", "h1", "h2"):
                cg = worker_callgrind.measure(self.bin, (1000, 5000), P["tls_conc"],
                                              None if proto == "plain" else proto)
                r["callgrind"][proto] = cg
                log(f"  tls callgrind {proto}: {cg['ir_per_request']:,.0f} instructions/request")
        return r

    def two_upstreams(self, n, rate, base):
        """Shape 7: one fleet, two upstreams (rate and rate/5), both batches at
        once; each is timed against its own ideal. asyncio: two scripts."""
        self.quiet.wait()
        nb, rate_b = n // 5, rate // 5
        c = harness.Cluster(workers=0, concurrency=self.P["tp_conc"],
                            fake_args=["--log-level", "warn", *base, "--headers", "none"],
                            broker_args=["--log-level", "warn"])
        try:
            fb = harness.Proc("fake-b", [os.path.join(self.bin, "llmq-fake-upstream"), "--port",
                                         "0", "--port-file", c.path("b.port"), "--log-level",
                                         "warn", "--rate-limit", str(rate_b), "--latency-ms",
                                         "20", "--headers", "none"], c.path("fake-b.log"))
            c.old_procs.append(fb)
            c._wait(lambda: os.path.exists(c.path("b.port")), "second fake")
            port_b = int(open(c.path("b.port")).read().strip())
            for _ in range(2):
                c.start_worker(extra=["--log-level", "warn", "--stats-interval", "0",
                                      "--upstream-named", f"b=http://127.0.0.1:{port_b}"])
            c.wait_workers(2)
            env = dict(os.environ, LLMQ_BROKER=c.front)
            llmq = os.path.join(self.bin, "llmq")
            t0 = time.monotonic()
            pa = subprocess.Popen([llmq, "run", self.input(n), "-o", c.path("a.out"), "--quiet"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            pb = subprocess.Popen([llmq, "run", self.input(nb), "-o", c.path("b.out"), "--quiet",
                                   "--upstream", "b"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
            res = {}
            for key, p, nn, rr, port, out in (("a", pa, n, rate, c.fake_port, "a.out"),
                                               ("b", pb, nb, rate_b, port_b, "b.out")):
                p.wait()
                wall = time.monotonic() - t0
                st = fake_get(port, "/stats")
                res[key] = {"n": nn, "rate": rr, "ideal_s": nn / rr, "wall_s": round(wall, 3),
                            "rc": p.returncode, "out": check_output(c.path(out), nn),
                            "fake": {k: st.get(k) for k in ("requests", "by_status")}}
                log(f"  llmq two upstreams, {key}: {nn} jobs at {rr}/s in {wall:.2f} s")
        finally:
            c.close()
        res["asyncio_a"] = self.asyncio_run(n, self.P["asy_tp_conc"], series=True,
                                            fake=[*base, "--headers", "none"], label="two, A")
        res["asyncio_b"] = self.asyncio_run(nb, self.P["asy_tp_conc"], series=True,
                                            fake=["--rate-limit", str(rate_b), "--latency-ms",
                                                  "20", "--headers", "none"], label="two, B")
        return res

    def s_cost(self):
        """Per-job cost (issue 11), every figure in one run: instructions per
        job of each process (bench/instructions.py, callgrind), 100,000
        instant jobs with durable Redis (AOF everysec) beside the asyncio
        script and wrk against the same fake, 10,000 jobs at 1 s latency
        through one worker with 5,000 slots, 10,000 jobs at 50 ms through
        2 workers x 250. With LLMQ_BENCH_BEFORE=DIR (binaries of an earlier
        commit) the llmq rows run with those too, in the same run."""
        P = self.P
        sys.path.insert(0, HERE)
        import instructions
        sets = [("now", self.bin)]
        before = os.environ.get("LLMQ_BENCH_BEFORE")
        if before:
            sets.append(("before", os.path.abspath(before)))
        r = {"sets": {}}
        for name, bindir in sets:
            self.bin = harness.BIN = bindir
            try:
                x = {"bin": bindir}
                self.quiet.wait()
                # the median run by total (a process's figure moves with how
                # many results each REPORT call happened to carry)
                ins = []
                for _ in range(P["ins_reps"]):
                    ins.append(instructions.measure(P["ins_n"], 1, 256))
                    log(f"  instructions per job ({name}): {ins[-1]['per_job']}")
                ins.sort(key=lambda v: v["per_job"]["llmq_total"])
                x["instructions"] = ins[len(ins) // 2]
                x["instructions_runs"] = [v["per_job"] for v in ins]
                runs = [self.llmq_run(P["cost_n"], 2, 256, aof=True, label=f"{name} durable")
                        for _ in range(P["cost_reps"])]
                x["durable_runs"], x["durable"] = runs, median_run(runs)
                fake = ["--latency-ms", "1000"]
                runs = [self.llmq_run(P["thou_n"], 1, P["thou_slots"], fake=fake,
                                      label=f"{name} 1 s x {P['thou_slots']}")
                        for _ in range(P["cost_reps"])]
                x["thousands_runs"] = runs
                x["thousands"] = median_run(runs, "wall_s")
                fake = ["--latency-ms", "50"]
                runs = [self.llmq_run(P["fifty_n"], 2, 250, fake=fake, label=f"{name} 50 ms")
                        for _ in range(P["cost_reps"])]
                x["fifty_runs"], x["fifty"] = runs, median_run(runs, "wall_s")
                r["sets"][name] = x
            finally:
                self.bin = harness.BIN = self.a.bin
        r["thousands_ideal_s"] = P["thou_n"] / P["thou_slots"] * 1.0
        r["fifty_ideal_s"] = P["fifty_n"] / 500 * 0.05
        asy = [self.asyncio_run(P["cost_n"], P["asy_tp_conc"], label="durable row")
               for _ in range(P["bas_reps"])]
        r["asyncio_runs"] = asy
        r["asyncio"] = max(asy, key=lambda v: v["jobs_per_s"])
        c = self.cluster(0, 1)
        try:
            r["wrk"] = self.wrk_once(f"http://127.0.0.1:{c.fake_port}", 256, P["wrk_secs"],
                                     c.fake)
        finally:
            c.close()
        log(f"  wrk -c256: {r['wrk']['req_per_s']} req/s")
        return r

    def s_profile(self):
        """perf record of every process during one throughput run."""
        P = self.P
        if not P["prof_n"]:
            return {"skipped": "quick mode"}
        if subprocess.run(["perf", "record", "-o", "/dev/null", "true"],
                          capture_output=True).returncode != 0:
            return {"skipped": "perf record does not work here"}
        pdir = os.path.join(self.tmp, "perf")
        os.makedirs(pdir, exist_ok=True)
        n = P["prof_n"]
        c = self.cluster(P["tp_workers"], P["tp_conc"])
        perfs = []
        try:
            procs = cluster_procs(c)
            for k, p in procs.items():
                perfs.append(subprocess.Popen(
                    ["perf", "record", "-F", "499", "--call-graph", "dwarf,8192", "-o",
                     f"{pdir}/{k}.data", "-p",
                     str(p.p.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(0.5)
            env = dict(os.environ, LLMQ_BROKER=c.front)
            t0 = time.monotonic()
            subprocess.run(["perf", "record", "-F", "499", "--call-graph", "dwarf,8192", "-o",
                            f"{pdir}/client.data",
                            os.path.join(self.bin, "llmq"), "run", self.input(n), "-o",
                            c.path("out.jsonl"), "--quiet"], env=env, capture_output=True)
            wall = time.monotonic() - t0
            for pp in perfs:
                pp.send_signal(signal.SIGINT)
            for pp in perfs:
                pp.wait()
        finally:
            c.close()
        r = {"n": n, "wall_s": round(wall, 3), "procs": {}}
        for k in [*procs.keys(), "client"]:
            data = f"{pdir}/{k}.data"
            if os.path.exists(data):
                r["procs"][k] = {"symbols": self.perf_top(data, "dso,symbol", 14),
                                 "threads": self.perf_top(data, "comm,dso", 8),
                                 "inclusive": self.perf_children(data, 16)}
        log(f"  profile: {n} jobs in {wall:.2f} s under perf")
        return r

    def perf_top(self, data, sort, limit):
        out = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", sort,
                              "--stdio", "-g", "none", "--percent-limit", "0.5"],
                             capture_output=True, text=True).stdout
        rows = []
        for line in out.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split()
            if not parts[0].endswith("%"):
                continue
            pct = float(parts[0].rstrip("%"))
            rest = [x for x in parts[1:] if x not in ("[.]", "[k]")]
            rows.append([pct, *rest[:2]])
            if len(rows) >= limit:
                break
        return rows

    SKIP = {"lq_loop_run", "lq_loop_run_once", "main", "_start", "__libc_start_call_main",
            "__libc_start_main_impl", "clone3", "start_thread", "entry_SYSCALL_64_after_hwframe",
            "do_syscall_64", "__libc_start_main", "(inlined)"}

    def perf_children(self, data, limit):
        """Inclusive time of the process's interesting functions (dwarf call graphs)."""
        out = subprocess.run(["perf", "report", "-i", data, "--children", "--sort", "symbol",
                              "--stdio", "-g", "none", "--percent-limit", "2"],
                             capture_output=True, text=True).stdout
        rows = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) < 4 or not parts[0].endswith("%") or not parts[1].endswith("%"):
                continue
            sym = parts[3]
            if sym.startswith("0x") or sym in self.SKIP or parts[2] == "[k]":
                continue
            rows.append([float(parts[0].rstrip("%")), float(parts[1].rstrip("%")), sym])
            if len(rows) >= limit:
                break
        return rows

    # ------------------------------------------------------------- main --
    def run(self, only):
        P = self.P
        need = set()
        if "throughput" in only or "profile" in only:
            need |= {P["tp_n"], P["asy_tp_n"], P["cel_tp_n"], P["cel_probe_n"], P["prof_n"]}
        if "latency" in only:
            need |= {P["lat_n"], P["asy_lat_n"], P["cel_lat_n"]}
        if "scale_n" in only:
            need |= set(P["scale_ns"]) | set(P["asy_scale_ns"])
        if "scale_workers" in only:
            need |= {P["wk_n"], P["wk_lat_n"]}
        if "faults" in only:
            need |= {P["flt_n"], P["cel_flt_n"]}
        if "rate_limited" in only:
            need |= {P["rl_n"], P["cel_rl_n"]}
        if "rate_shapes" in only:
            need |= {P["sh_n"], P["sh_n"] // 5}
        if "cost" in only:
            need |= {P["cost_n"], P["thou_n"], P["fifty_n"]}
        need.discard(0)
        t = time.monotonic()
        self.prepare_inputs(need)
        self.res["inputs_s"] = round(time.monotonic() - t, 1)
        timings = {}
        for name in ALL:
            if name not in only:
                continue
            if name == "profile" and self.a.no_profile:
                continue
            log(f"scenario {name}")
            t = time.monotonic()
            try:
                self.res[name] = getattr(self, f"s_{name}")()
            except Exception as e:  # keep going: a failed scenario is reported
                import traceback
                traceback.print_exc()
                self.res[name] = {"error": repr(e)}
            timings[name] = round(time.monotonic() - t, 1)
            log(f"scenario {name} took {timings[name]} s")
        self.res["timings_s"] = timings
        self.res["quiet_wait_s"] = round(self.quiet.waited, 1)
        return self.res


def rl_sim(bindir, tmp):
    """Runs llmq-rl-sim: (figures per shape, {shape: [(t, pace, ok, provider)]})."""
    d = os.path.join(tmp, "rl-sim")
    os.makedirs(d, exist_ok=True)
    p = subprocess.run([os.path.join(bindir, "llmq-rl-sim"), "--json", "--trace", d],
                       capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": p.stderr}, {}
    traces = {}
    for name in ("bucket", "cold", "steps"):
        with open(os.path.join(d, f"rl_{name}.dat")) as f:
            traces[name] = [[float(v) for v in line.split()[:4]] for line in f]
    return json.loads(p.stdout), traces


def tokens_of(path):
    """Tokens the fake upstream charges for an input file: prompt characters
    / 4 (rounded up) + completion tokens (min(max_tokens, 16)), per line."""
    total = 0
    with open(path) as f:
        for line in f:
            body = json.loads(line)["body"]
            chars = sum(len(m.get("content", "")) for m in body.get("messages", []))
            mt = body.get("max_tokens", 16)
            total += (chars + 3) // 4 + (16 if mt <= 0 or mt > 16 else mt)
    return total


def steps_ideal(n, rate, steps):
    """Seconds for n jobs when the rate changes at (t, rate) steps."""
    t, done, r = 0.0, 0.0, rate
    for at, nr in steps + [(1e9, None)]:
        if done + r * (at - t) >= n:
            return t + (n - done) / r
        done += r * (at - t)
        t, r = at, nr
    return t


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // 1024
    except OSError:
        pass

    def ver(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
    commit = ver(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip() != ""
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_mb": mem, "kernel": platform.release(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit + ("+dirty" if dirty else ""),
            "redis": ver(["redis-server", "--version"]),
            "python": platform.python_version(),
            "loadavg_start": open("/proc/loadavg").read().split()[:3]}


def summary_table(res):
    rows = []
    tp = res.get("throughput", {})
    if "llmq" in tp:
        for k in ("llmq", "asyncio", "celery"):
            x = tp[k]
            rows.append((f"throughput 0 ms: {k}", f"{x['n']:,} jobs", f"{x['wall_s']:.2f} s",
                         f"{x['jobs_per_s']:,.0f} jobs/s"))
    w = res.get("wrk", {})
    if "max_req_per_s" in w:
        rows.append(("fake upstream ceiling (wrk)", "", "", f"{w['max_req_per_s']:,.0f} req/s"))
    lat = res.get("latency", {})
    if "llmq" in lat:
        for k in ("llmq", "asyncio", "celery"):
            x = lat[k]
            ideal = x.get("ideal_s", lat["ideal_s"])
            rows.append((f"latency 100 ms, c=1000: {k}", f"{x['n']:,} jobs",
                         f"{x['wall_s']:.2f} s", f"{x['wall_s'] / ideal:.2f} x ideal {ideal:.1f} s"))
    sn = res.get("scale_n", {})
    for x in sn.get("llmq", []):
        pr = x["procs"]
        rows.append(("scale N: llmq", f"{x['n']:,} jobs", f"{x['wall_s']:.2f} s",
                     "peak MB broker %.0f worker %.0f client %.0f redis %.0f" % (
                         pr.get("broker", {}).get("hwm_kb", 0) / 1024,
                         pr.get("worker0", {}).get("hwm_kb", 0) / 1024,
                         x["client"]["hwm_kb"] / 1024, pr.get("redis", {}).get("hwm_kb", 0) / 1024)))
    for x in sn.get("asyncio", []):
        rows.append(("scale N: asyncio", f"{x['n']:,} jobs", f"{x['wall_s']:.2f} s",
                     "peak MB %.0f" % (x["client"]["hwm_kb"] / 1024)))
    sw = res.get("scale_workers", {})
    for x in sw.get("zero", []):
        rows.append((f"workers={x['workers']} 0 ms", f"{x['n']:,} jobs", f"{x['wall_s']:.2f} s",
                     f"{x['jobs_per_s']:,.0f} jobs/s"))
    for x in sw.get("latency", []):
        rows.append((f"workers={x['workers']} 100 ms c={x['concurrency']}", f"{x['n']:,} jobs",
                     f"{x['wall_s']:.2f} s", f"ideal {x['ideal_s']:.1f} s"))
    f = res.get("faults", {})
    for k in ("llmq", "asyncio", "asyncio_killed", "celery"):
        if k in f:
            x = f[k]
            rows.append((f"faults: {k}", f"{x['n']:,} jobs", f"{x['wall_s']:.2f} s",
                         f"lost {x['out']['lost']} dup lines {x['out']['duplicate_lines']} "
                         f"failed {x['out']['failed']} paid twice {x.get('paid_twice', '-')}"))
    rl = res.get("rate_limited", {})
    for k in ("llmq", "llmq_configured", "asyncio", "celery"):
        if k in rl:
            x = rl[k]
            st = x["fake"]["by_status"] or {}
            rows.append((f"rate-limited: {k}", f"{x['n']:,} jobs", f"{x['wall_s']:.2f} s",
                         f"429s {st.get('429', 0)} failed {x['out']['failed']}"))
    wid = [max(len(str(r[i])) for r in rows) for i in range(4)] if rows else []
    for r in rows:
        print("  ".join(str(v).ljust(wid[i]) for i, v in enumerate(r)))


def main():
    ap = argparse.ArgumentParser(description="llmq benchmarks")
    ap.add_argument("--bin", default=os.environ.get("LLMQ_BIN", os.path.join(ROOT, "build")))
    ap.add_argument("--quick", action="store_true", default=bool(os.environ.get("BENCH_QUICK")))
    ap.add_argument("--only", default=os.environ.get("BENCH_ONLY", ""))
    ap.add_argument("--json", default=os.path.join(HERE, "results", "latest.json"))
    ap.add_argument("--report", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args()
    a.bin = os.path.abspath(a.bin)
    if not a.report_only:
        only = [x for x in a.only.split(",") if x] or ALL
        bad = set(only) - set(ALL)
        if bad:
            ap.error(f"unknown scenario(s): {', '.join(sorted(bad))}")
        P = QUICK if a.quick else FULL
        t0 = time.monotonic()
        b = Bench(a, P)
        res = {"meta": machine(), "quick": a.quick, "params": P}
        log(f"{'quick' if a.quick else 'full'} run on {res['meta']['nproc']} x "
            f"{res['meta']['cpu']}, binaries {a.bin}")
        try:
            b.res = res
            b.run(only)
        finally:
            b.close()
        res["meta"]["total_s"] = round(time.monotonic() - t0, 1)
        if a.only and os.path.exists(a.json):
            # a partial run (BENCH_ONLY) updates its scenarios in the last
            # full results instead of dropping the others
            with open(a.json) as f:
                old = json.load(f)
            for name in only:
                old[name] = res.get(name)
                old.setdefault("partial_runs", {})[name] = res["meta"]
            res = old
        os.makedirs(os.path.dirname(a.json), exist_ok=True)
        with open(a.json + ".tmp", "w") as f:
            json.dump(res, f, indent=1)
        os.replace(a.json + ".tmp", a.json)
        log(f"wrote {a.json} ({res['meta']['total_s']} s in all)")
        summary_table(res)
    sys.path.insert(0, HERE)
    import report
    report.write(a.json, a.report)
    log(f"wrote {a.report}")


if __name__ == "__main__":
    harness.signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
