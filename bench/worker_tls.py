#!/usr/bin/python3
"""TLS benchmark: ONE llmq-worker over HTTPS (HTTP/1.1 and HTTP/2) beside the
asyncio script, both against the same local TLS front.

    worker_tls.py [--bin DIR] [--jobs 20000] [--conc 250] [--runs 1]
                  [--worker-env K=V ...] [--json FILE]

The front is Debian's nginx-light (ssl, http2), started from a config written
into a temp dir, with a self-signed CA and a server certificate for
127.0.0.1 that openssl makes there; it proxies to llmq-fake-upstream at 0 ms
over kept-alive HTTP/1.1 connections. Two listeners: one offers only
http/1.1 in ALPN, the other h2 as well. For each, one run of:
  - llmq-worker fed by bench/worker_driver.c (the worker alone, no broker)
    with --ca-file CA: requests/s, the worker's CPU per request (utime +
    stime of every thread, /proc/PID/stat), the connections it opened;
  - bench/baseline_asyncio.py --ca-file CA (aiohttp speaks HTTP/1.1 only,
    so on the h2 listener it negotiates HTTP/1.1): jobs/s and its CPU per
    request.
bench/run.py's `tls` scenario calls measure(); alone it prints JSON.
Needs nginx (scripts/install-deps.sh installs nginx-light for the bench)
and openssl.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import worker_bench  # noqa: E402
from worker_bench import harness, cpu_s  # noqa: E402

PY = "/usr/bin/python3"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def make_certs(d):
    """A CA and a server certificate for 127.0.0.1/localhost, signed by it.
    Returns (ca_pem, cert_pem, key_pem)."""
    ca_key, ca = os.path.join(d, "ca.key"), os.path.join(d, "ca.pem")
    key, csr, cert = (os.path.join(d, n) for n in ("server.key", "server.csr", "server.pem"))
    ext = os.path.join(d, "server.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n")
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=llmq bench CA")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
        "-days", "2", "-extfile", ext)
    return ca, cert, key


class TlsFront:
    """nginx terminating TLS on two loopback ports (h1 only, h1 + h2) in
    front of the fake upstream at upstream_port."""

    def __init__(self, d, upstream_port, cert, key):
        self.dir = os.path.join(d, f"nginx-{time.monotonic_ns()}")
        os.makedirs(os.path.join(self.dir, "tmp"))
        self.h1_port, self.h2_port = harness.free_port(), harness.free_port()
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""
worker_processes 1;
worker_rlimit_nofile 20000;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 16000; }}
http {{
    access_log off;
    client_body_temp_path {self.dir}/tmp;
    proxy_temp_path {self.dir}/tmp;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    http2_max_concurrent_streams 128;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:llmqbench:10m;
    upstream fake {{
        server 127.0.0.1:{upstream_port};
        keepalive 512;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{self.h1_port} ssl;
        listen 127.0.0.1:{self.h2_port} ssl http2;
        location / {{
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
""")
        self.p = subprocess.Popen([NGINX, "-e", os.path.join(self.dir, "error.log"), "-p",
                                   self.dir, "-c", conf, "-g", "daemon off; master_process off;"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=open(os.path.join(self.dir, "stderr.log"), "wb"))
        for _ in range(200):
            if all(_listening(p) for p in (self.h1_port, self.h2_port)):
                break
            if self.p.poll() is not None:
                raise RuntimeError("nginx exited: " + open(
                    os.path.join(self.dir, "stderr.log")).read()[-500:])
            time.sleep(0.025)

    def url(self, h2):
        return f"https://127.0.0.1:{self.h2_port if h2 else self.h1_port}"

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def _listening(port):
    import socket
    s = socket.socket()
    try:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
    finally:
        s.close()


def run_worker(bin_dir, driver, d, url, ca, jobs, conc, env_extra=None, front=None):
    """One worker, fed by the minimal driver, against url. Returns figures."""
    port = harness.free_port()
    drv = subprocess.Popen([driver, "--bind", f"tcp://127.0.0.1:{port}", "--jobs", str(jobs)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    log_path = os.path.join(d, f"worker-tls-{time.monotonic_ns()}.log")
    log = open(log_path, "wb")
    w = subprocess.Popen([os.path.join(bin_dir, "llmq-worker"), "--broker",
                          f"tcp://127.0.0.1:{port}", "--upstream", url, "--ca-file", ca,
                          "--concurrency", str(conc), "--stats-interval", "1"],
                         stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                         env=dict(os.environ, **(env_extra or {})))
    try:
        line = drv.stdout.readline().strip()
        if line != "registered":
            raise RuntimeError(f"driver said {line!r}")
        time.sleep(0.3)
        c0 = cpu_s(w.pid)
        n0 = cpu_s(front.p.pid) if front else 0
        drv.stdin.write("go\n")
        drv.stdin.flush()
        res = json.loads(drv.stdout.readline())
        c1 = cpu_s(w.pid)
        n1 = cpu_s(front.p.pid) if front else 0
        time.sleep(1.1)  # one more stats line with the final counters
    finally:
        w.terminate()
        rc = w.wait(30)
        drv.wait(10)
        log.close()
    if rc != 0:
        raise RuntimeError(f"worker exited {rc} on SIGTERM")
    if res["ok"] != jobs:
        raise RuntimeError(f"only {res['ok']} of {jobs} jobs ok (log {log_path})")
    conns = [int(x) for x in re.findall(r"connections=(\d+)", open(log_path).read())]
    return {"jobs": jobs, "wall_s": round(res["wall_s"], 3),
            "jobs_per_s": round(jobs / res["wall_s"], 1),
            "cpu_us": round((c1 - c0) / jobs * 1e6, 1),
            "front_cpu_us": round((n1 - n0) / jobs * 1e6, 1),
            "connections": conns[-1] if conns else None}


def run_asyncio(d, inp, url, ca, jobs, conc, front=None):
    out = os.path.join(d, f"asy-{time.monotonic_ns()}.jsonl")
    n0 = cpu_s(front.p.pid) if front else 0
    t0 = time.monotonic()
    p = subprocess.Popen([PY, os.path.join(HERE, "baseline_asyncio.py"), inp, out, "--base-url",
                          url, "--ca-file", ca, "--concurrency", str(conc)],
                         stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    stdout = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    n1 = cpu_s(front.p.pid) if front else 0
    summary = json.loads(stdout.strip().splitlines()[-1])
    if summary["ok"] != jobs:
        raise RuntimeError(f"asyncio: {summary}")
    return {"jobs": jobs, "wall_s": round(wall, 3), "jobs_per_s": round(jobs / wall, 1),
            "cpu_us": round((ru.ru_utime + ru.ru_stime) / jobs * 1e6, 1),
            "front_cpu_us": round((n1 - n0) / jobs * 1e6, 1)}


def measure(bin_dir, jobs=20000, conc=250, asy_jobs=None, worker_env=None, log=print):
    """Both protocols, llmq-worker and the asyncio script. Returns a dict."""
    d = tempfile.mkdtemp(prefix="llmq-tls-")
    harness.BIN = bin_dir
    try:
        ca, cert, key = make_certs(d)
        driver = worker_bench.build_driver(bin_dir, d)
        fake = worker_bench.Fake(bin_dir, d, 0)
        inp = os.path.join(d, "in.jsonl")
        asy_jobs = asy_jobs or jobs
        subprocess.run([PY, os.path.join(HERE, "gen_batch.py"), str(asy_jobs), inp], check=True)
        front = TlsFront(d, fake.port, cert, key)
        out = {"jobs": jobs, "concurrency": conc, "nginx": subprocess.run(
            [NGINX, "-v"], capture_output=True, text=True).stderr.strip()}
        try:
            for proto in ("h1", "h2"):
                url = front.url(proto == "h2")
                r = run_worker(bin_dir, driver, d, url, ca, jobs, conc, worker_env, front)
                log(f"  tls {proto} llmq-worker: {r}")
                a = run_asyncio(d, inp, url, ca, asy_jobs, conc, front)
                log(f"  tls {proto} asyncio: {a}")
                out[proto] = {"llmq": r, "asyncio": a}
        finally:
            front.stop()
            fake.stop()
        return out
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(HERE), "build"))
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--asyncio-jobs", type=int, default=0)
    ap.add_argument("--conc", type=int, default=250)
    ap.add_argument("--worker-env", action="append", default=[])
    ap.add_argument("--json")
    a = ap.parse_args()
    env = dict(kv.split("=", 1) for kv in a.worker_env)
    r = measure(os.path.abspath(a.bin), a.jobs, a.conc, a.asyncio_jobs or None, env,
                log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(r, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)


if __name__ == "__main__":
    main()
