#!/usr/bin/python3
"""Worker benchmark: ONE llmq-worker against the fake upstream.

    worker_bench.py [--bin DIR] [--runs 3] [--jobs-a 100000] [--conc-a 256]
                    [--wrk-seconds 10] [--jobs-b 10000] [--conc-b 5000]
                    [--latency-b 1000] [--no-broker] [--md FILE]

(a) 0 ms upstream latency, --conc-a requests in flight:
    - wrk: `wrk -t1 -c<conc-a> -d10s -s bench/wrk_post.lua` against a fresh
      fake upstream: requests/s and wrk's own CPU per request;
    - driver: the worker fed by bench/worker_driver.c, a minimal stand-in for
      the broker (it speaks the worker dialogue and nothing else), so that
      the figure is the worker's: requests/s (first JOB to last RESULT) and
      the worker's CPU per request (utime+stime from /proc/PID/stat before
      and after, divided by the requests);
    - broker: the real pipeline (redis-server, llmq-broker --prefetch 5000,
      one worker): the batch is submitted with no worker running, then the
      worker is started and timed until `llmq status` says completed.
      End-to-end jobs/s and the CPU per job of worker, broker and Redis.
(b) --latency-b ms upstream latency, --conc-b requests in flight, --jobs-b
    jobs: wall time against the ideal (jobs / conc x latency) and the
    worker's peak memory per in-flight request: (VmHWM at the end minus
    VmRSS of the registered, idle worker) / conc. Through the driver every
    run, through the broker once (it is slower: see bench/worker_results.md).

Every run starts fresh processes on 127.0.0.1 ports; figures are medians over
--runs runs ((a) runs interleave wrk, driver and broker so that a busy spell
on a shared machine hits all three). Needs wrk and a C compiler (the driver
is built from bench/worker_driver.c against the project's static libraries
in --bin). Prints a Markdown table; --md FILE also writes it to FILE.
"""
import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))
import harness  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    """utime + stime of pid in seconds (every thread)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def vm_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def build_driver(bin_dir, out_dir):
    exe = os.path.join(out_dir, "worker_driver")
    libs = subprocess.run(["pkg-config", "--libs", "libzmq", "msgpack"], capture_output=True,
                          text=True, check=True).stdout.split()
    subprocess.run(["cc", "-O2", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror",
                    "-I", ROOT, os.path.join(HERE, "worker_driver.c"), "-o", exe,
                    *(os.path.join(bin_dir, f"libllmq_{n}.a") for n in ("wire", "proto", "common")),
                    *libs, "-lm"], check=True)
    return exe


class Fake:
    def __init__(self, bin_dir, d, latency_ms=0):
        port_file = os.path.join(d, f"fake-{time.monotonic_ns()}.port")
        self.p = subprocess.Popen([os.path.join(bin_dir, "llmq-fake-upstream"), "--port", "0",
                                   "--port-file", port_file, "--latency-ms", str(latency_ms),
                                   "--log-level", "warn"], stdin=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.exists(port_file):
                break
            time.sleep(0.025)
        with open(port_file) as f:
            self.port = int(f.read())
        self.url = f"http://127.0.0.1:{self.port}"

    def stats(self):
        with urllib.request.urlopen(self.url + "/stats", timeout=10) as r:
            return json.loads(r.read())

    def stop(self):
        self.p.terminate()
        self.p.wait()


def run_wrk(bin_dir, d, conc, seconds):
    fake = Fake(bin_dir, d)
    try:
        f0 = cpu_s(fake.p.pid)
        p = subprocess.Popen(["wrk", "-t1", f"-c{conc}", f"-d{seconds}s", "-s",
                              os.path.join(HERE, "wrk_post.lua"), fake.url],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out = p.stdout.read()
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        f1 = cpu_s(fake.p.pid)
    finally:
        fake.stop()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    n = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"non-2xx/3xx (\d+), errors connect (\d+) read (\d+) write (\d+) timeout (\d+)",
                       out)
    if errors and sum(int(x) for x in errors.groups()):
        print(f"wrk reported errors: {errors.group(0)}", file=sys.stderr)
    return {"rps": rps, "requests": n, "wrk_cpu_us": (ru.ru_utime + ru.ru_stime) / n * 1e6,
            "fake_cpu_us": (f1 - f0) / n * 1e6}


def run_driver(bin_dir, driver, d, jobs, conc, latency_ms):
    """One worker fed by the minimal driver. Returns the figures."""
    fake = Fake(bin_dir, d, latency_ms)
    port = harness.free_port()
    drv = subprocess.Popen([driver, "--bind", f"tcp://127.0.0.1:{port}", "--jobs", str(jobs)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    log = open(os.path.join(d, "worker-driver.log"), "ab")
    w = subprocess.Popen([os.path.join(bin_dir, "llmq-worker"), "--broker",
                          f"tcp://127.0.0.1:{port}", "--upstream", fake.url, "--concurrency",
                          str(conc), "--stats-interval", "0"], stdout=log, stderr=log,
                         stdin=subprocess.DEVNULL)
    try:
        line = drv.stdout.readline().strip()
        if line != "registered":
            raise RuntimeError(f"driver said {line!r}")
        time.sleep(0.5)  # let the worker settle: idle baseline
        base_kib = vm_kib(w.pid, "VmRSS")
        c0, f0, d0 = cpu_s(w.pid), cpu_s(fake.p.pid), cpu_s(drv.pid)
        drv.stdin.write("go\n")
        drv.stdin.flush()
        res = json.loads(drv.stdout.readline())
        c1, f1, d1 = cpu_s(w.pid), cpu_s(fake.p.pid), cpu_s(drv.pid)
        hwm_kib = vm_kib(w.pid, "VmHWM")
        max_inflight = fake.stats()["max_inflight"]
    finally:
        w.terminate()
        rc = w.wait(30)
        drv.wait(10)
        fake.stop()
        log.close()
    if rc != 0:
        raise RuntimeError(f"worker exited {rc} on SIGTERM")
    if res["ok"] != jobs:
        raise RuntimeError(f"only {res['ok']} of {jobs} jobs ok")
    return {"wall": res["wall_s"], "rps": jobs / res["wall_s"],
            "worker_cpu_us": (c1 - c0) / jobs * 1e6, "fake_cpu_us": (f1 - f0) / jobs * 1e6,
            "driver_cpu_us": (d1 - d0) / jobs * 1e6, "base_kib": base_kib, "hwm_kib": hwm_kib,
            "kib_per_slot": (hwm_kib - base_kib) / conc, "max_inflight": max_inflight}


def run_broker(jobs, conc, latency_ms, worker_first=False):
    """The real pipeline. worker_first: start the worker (idle baseline)
    before submitting, and time from the submit; otherwise submit first and
    time from the worker's start."""
    c = harness.Cluster(workers=0, concurrency=conc, start=False,
                        broker_args=["--prefetch", "5000"],
                        worker_args=["--stats-interval", "0"],
                        fake_args=["--latency-ms", str(latency_ms)])
    try:
        c.start_redis()
        c.start_fake()
        c.start_broker()
        inp = harness.gen_batch(c.path("in.jsonl"), jobs)
        pids = {"broker": c.broker.p.pid, "redis": c.redis.p.pid}
        base_kib = None
        if worker_first:
            w = c.start_worker()
            c.wait_workers(1)
            time.sleep(0.3)
            base_kib = vm_kib(w.p.pid, "VmRSS")
            cpu0 = {k: cpu_s(p) for k, p in pids.items()}
            cpu0["worker"] = cpu_s(w.p.pid)
            t0 = time.monotonic()
            batch = c.llmq("submit", inp, "--quiet", check=0).stdout.strip()
        else:
            batch = c.llmq("submit", inp, "--quiet", check=0).stdout.strip()
            cpu0 = {k: cpu_s(p) for k, p in pids.items()}
            cpu0["worker"] = 0.0
            t0 = time.monotonic()
            w = c.start_worker()
        pids["worker"] = w.p.pid
        while c.status(batch)["request_counts"]["completed"] < jobs:
            time.sleep(0.05)
        wall = time.monotonic() - t0
        cpu1 = {k: cpu_s(p) for k, p in pids.items()}
        hwm_kib = vm_kib(w.p.pid, "VmHWM")
        st = c.status(batch)
        if st["request_counts"]["failed"]:
            raise RuntimeError(f"{st['request_counts']['failed']} jobs failed")
        max_inflight = c.fake_get("/stats")["max_inflight"]
    finally:
        c.close()
    if c.bad_exits:
        raise RuntimeError(f"processes did not exit cleanly: {c.bad_exits}")
    out = {"wall": wall, "rps": jobs / wall, "max_inflight": max_inflight, "hwm_kib": hwm_kib}
    for k in cpu1:
        out[f"{k}_cpu_us"] = (cpu1[k] - cpu0[k]) / jobs * 1e6
    if base_kib is not None:
        out["base_kib"] = base_kib
        out["kib_per_slot"] = (hwm_kib - base_kib) / conc
    return out


def med(runs, key):
    return statistics.median(r[key] for r in runs)


def spread(runs, key, fmt):
    vals = sorted(r[key] for r in runs)
    return fmt.format(statistics.median(vals)) + (
        f" ({fmt.format(vals[0])}–{fmt.format(vals[-1])})" if len(vals) > 1 else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jobs-a", type=int, default=100000)
    ap.add_argument("--conc-a", type=int, default=256)
    ap.add_argument("--wrk-seconds", type=int, default=10)
    ap.add_argument("--jobs-b", type=int, default=10000)
    ap.add_argument("--conc-b", type=int, default=5000)
    ap.add_argument("--latency-b", type=int, default=1000)
    ap.add_argument("--no-broker", action="store_true", help="skip the runs through the broker")
    ap.add_argument("--md", help="also write the Markdown table here")
    args = ap.parse_args()
    bin_dir = harness.BIN = os.path.abspath(args.bin)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * args.conc_b + 256
    print(f"open files: soft {soft}, hard {hard} (the worker raises its soft limit to "
          f"concurrency*2+256 = {need}; the fake raises its own)", file=sys.stderr)
    if hard != resource.RLIM_INFINITY and hard < need:
        sys.exit(f"the hard open-file limit {hard} is below {need}: raise it (ulimit -Hn)")

    d = tempfile.mkdtemp(prefix="llmq-wbench-")
    driver = build_driver(bin_dir, d)
    load0 = os.getloadavg()

    wrk_runs, drv_a, brk_a, drv_b, brk_b = [], [], [], [], []
    for i in range(args.runs):
        print(f"(a) run {i + 1}/{args.runs}", file=sys.stderr)
        wrk_runs.append(run_wrk(bin_dir, d, args.conc_a, args.wrk_seconds))
        print(f"  wrk     {wrk_runs[-1]}", file=sys.stderr)
        drv_a.append(run_driver(bin_dir, driver, d, args.jobs_a, args.conc_a, 0))
        print(f"  driver  {drv_a[-1]}", file=sys.stderr)
        if not args.no_broker:
            brk_a.append(run_broker(args.jobs_a, args.conc_a, 0))
            print(f"  broker  {brk_a[-1]}", file=sys.stderr)
    for i in range(args.runs):
        print(f"(b) run {i + 1}/{args.runs}", file=sys.stderr)
        drv_b.append(run_driver(bin_dir, driver, d, args.jobs_b, args.conc_b, args.latency_b))
        print(f"  driver  {drv_b[-1]}", file=sys.stderr)
    if not args.no_broker:
        print("(b) through the broker", file=sys.stderr)
        brk_b.append(run_broker(args.jobs_b, args.conc_b, args.latency_b, worker_first=True))
        print(f"  broker  {brk_b[-1]}", file=sys.stderr)
    load1 = os.getloadavg()

    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ideal = args.jobs_b / args.conc_b * args.latency_b / 1000
    wrk_rps = med(wrk_runs, "rps")
    rows = [
        f"Machine: {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average "
        f"{load0[0]:.1f} before, {load1[0]:.1f} after (shared machine). "
        f"Open files: soft {soft}, hard {hard}. Medians of {args.runs} runs "
        "(min–max in brackets).",
        "",
        f"**(a) 0 ms latency, {args.conc_a} in flight, {args.jobs_a:,} jobs "
        f"(wrk: {args.wrk_seconds} s)**",
        "",
        "| client | requests/s | % of wrk | its CPU µs/request | fake CPU µs/request |",
        "|---|---:|---:|---:|---:|",
        f"| wrk -t1 -c{args.conc_a} | {spread(wrk_runs, 'rps', '{:,.0f}')} | 100 | "
        f"{spread(wrk_runs, 'wrk_cpu_us', '{:.1f}')} | {med(wrk_runs, 'fake_cpu_us'):.1f} |",
        f"| llmq-worker, minimal driver | {spread(drv_a, 'rps', '{:,.0f}')} | "
        f"{100 * med(drv_a, 'rps') / wrk_rps:.0f} | {spread(drv_a, 'worker_cpu_us', '{:.1f}')} | "
        f"{med(drv_a, 'fake_cpu_us'):.1f} |",
    ]
    if brk_a:
        rows.append(
            f"| llmq-worker, through broker + Redis (end to end) | "
            f"{spread(brk_a, 'rps', '{:,.0f}')} | {100 * med(brk_a, 'rps') / wrk_rps:.0f} | "
            f"{spread(brk_a, 'worker_cpu_us', '{:.1f}')} | – |")
    rows.append("")
    rows.append(f"Driver CPU: {med(drv_a, 'driver_cpu_us'):.1f} µs/request.")
    if brk_a:
        rows[-1] += (f" Through the broker, per job: broker {med(brk_a, 'broker_cpu_us'):.1f} µs, "
                     f"Redis {med(brk_a, 'redis_cpu_us'):.1f} µs.")
    rows += [
        "",
        f"**(b) {args.latency_b} ms latency, {args.conc_b:,} in flight, {args.jobs_b:,} jobs "
        f"(ideal {ideal:.1f} s)**",
        "",
        "| feeder | wall s | × ideal | max in flight at the fake | worker CPU µs/request | "
        "idle RSS MiB | peak RSS MiB | KiB per in-flight request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| minimal driver | {spread(drv_b, 'wall', '{:.2f}')} | {med(drv_b, 'wall') / ideal:.2f} | "
        f"{med(drv_b, 'max_inflight'):,.0f} | {med(drv_b, 'worker_cpu_us'):.0f} | "
        f"{med(drv_b, 'base_kib') / 1024:.1f} | {med(drv_b, 'hwm_kib') / 1024:.1f} | "
        f"{spread(drv_b, 'kib_per_slot', '{:.1f}')} |",
    ]
    if brk_b:
        r = brk_b[0]
        rows.append(
            f"| broker + Redis (1 run) | {r['wall']:.2f} | {r['wall'] / ideal:.2f} | "
            f"{r['max_inflight']:,} | {r['worker_cpu_us']:.0f} | {r['base_kib'] / 1024:.1f} | "
            f"{r['hwm_kib'] / 1024:.1f} | {r['kib_per_slot']:.1f} |")
    table = "\n".join(rows) + "\n"
    print(table)
    if args.md:
        with open(args.md, "w") as f:
            f.write(table)


if __name__ == "__main__":
    main()
