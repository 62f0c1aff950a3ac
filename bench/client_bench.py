#!/usr/bin/python3
"""Client benchmark: peak memory and speed of `llmq submit` and `llmq results`.

    client_bench.py [--bin DIR] [--sizes 10000,1000000] [--results-lines N]
                    [--workers 4] [--concurrency 500] [--dir DIR] [--md FILE]

Starts redis-server, the broker and the fake upstream on loopback (the
system-test harness, tests/system/harness.py), then for each size:

  1. generates an input file with bench/gen_batch.py (~300-byte lines),
  2. validate: `llmq submit` against a closed port with --connect-timeout 1:
     the client reads and checks the whole file, then gives up on the
     broker; time = wall - 1 s (the client's validation pass alone),
  3. submit: `llmq submit FILE` to the broker, no workers running (so that
     the workers do not compete for the CPU): wall time, lines/s, peak RSS.

Then it starts --workers workers (fake upstream at 0 ms latency), lets them
finish one batch of --results-lines jobs (the largest size by default) and
measures `llmq results BATCH -o OUT` (wall, lines/s, peak RSS), and once
more with --errors ERRFILE.

Peak RSS is /usr/bin/time's %M (the process's ru_maxrss, i.e. its VmHWM,
resident high-water mark, shared libraries included; the floor is about
6 MiB). One more submit row uses --big-lines lines of maximal size (4 MiB
request bodies), the client's worst case per line.
Targets: peak RSS <= 32 MiB at every size, submit >= 100,000 lines/s.
Prints a Markdown table; --md FILE also appends it to FILE.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "system"))
import harness  # noqa: E402

MIB = 1024 * 1024


def measure(argv, env):
    """Runs argv under /usr/bin/time; returns (exit status, wall seconds, peak RSS
    bytes, stdout, stderr). Not wait4() from here: a child forked from this
    Python process would count Python's own RSS at fork time in ru_maxrss."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as stats:
        t0 = time.monotonic()
        rc = subprocess.call(["/usr/bin/time", "-f", "%M", "-o", stats.name, *argv], stdout=out,
                             stderr=err, stdin=subprocess.DEVNULL, env=env)
        wall = time.monotonic() - t0
        out.seek(0)
        err.seek(0)
        rss_kib = int(stats.read().strip().splitlines()[-1])
        return rc, wall, rss_kib * 1024, out.read().decode(), err.read().decode()


def closed_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--sizes", default="10000,1000000")
    ap.add_argument("--results-lines", type=int, default=0,
                    help="size of the batch whose results are fetched (default: largest size)")
    ap.add_argument("--big-lines", type=int, default=20,
                    help="lines of the maximal-size submit row (0: skip)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=500)
    ap.add_argument("--complete-timeout", type=int, default=1800,
                    help="seconds to wait for the results batch to finish")
    ap.add_argument("--dir", default=None, help="where input files are kept (default: a temp dir)")
    ap.add_argument("--md", default=None, help="append the Markdown table to this file")
    a = ap.parse_args()
    harness.BIN = os.path.abspath(a.bin)
    llmq = os.path.join(harness.BIN, "llmq")
    sizes = [int(x) for x in a.sizes.split(",")]
    nres = a.results_lines or max(sizes)
    if nres not in sizes:
        sizes.append(nres)
    work = a.dir or tempfile.mkdtemp(prefix="llmq-client-bench-")
    os.makedirs(work, exist_ok=True)

    c = harness.Cluster(workers=0, concurrency=a.concurrency)
    rows, batches = [], {}
    try:
        env = dict(os.environ, LLMQ_BROKER=c.front)
        dead = dict(env, LLMQ_BROKER=f"tcp://127.0.0.1:{closed_port()}")
        for n in sizes:
            path = os.path.join(work, f"in-{n}.jsonl")
            if not os.path.exists(path):
                subprocess.run([sys.executable, os.path.join(HERE, "gen_batch.py"), str(n), path],
                               check=True)
            size = os.path.getsize(path)
            rc, wall, rss, _, err = measure([llmq, "submit", path, "--connect-timeout", "1"], dead)
            assert rc == 2, err
            v = max(wall - 1.0, 1e-6)
            rows.append(("validate only", n, size, v, rss))
            rc, wall, rss, out, err = measure([llmq, "submit", path], env)
            assert rc == 0, err
            batches[n] = out.strip()
            rows.append(("submit", n, size, wall, rss))
            print(f"submit {n}: {wall:.2f}s {n / wall:,.0f} lines/s peak {rss / MIB:.1f} MiB",
                  file=sys.stderr)

        if a.big_lines > 0:
            path = os.path.join(work, f"big-{a.big_lines}.jsonl")
            if not os.path.exists(path):
                subprocess.run([sys.executable, os.path.join(HERE, "gen_batch.py"),
                                str(a.big_lines), path, "--body-bytes", "4150000"], check=True)
            rc, wall, rss, out, err = measure([llmq, "submit", path], env)
            assert rc == 0, err
            rows.append(("submit, 4 MiB lines", a.big_lines, os.path.getsize(path), wall, rss))

        # results: workers finish the batch of nres jobs (others run too)
        for _ in range(a.workers):
            c.start_worker()
        t0 = time.monotonic()
        batch = batches[nres]
        while True:
            st = json.loads(c.llmq("status", batch, "--json", check=0).stdout)
            done = st["request_counts"]["completed"] + st["request_counts"]["failed"]
            if st["status"] == "completed":
                break
            if time.monotonic() - t0 > a.complete_timeout:
                raise SystemExit(f"batch of {nres} not finished after {a.complete_timeout}s "
                                 f"({done} done); try --results-lines 100000")
            print(f"  running {nres}: {done}/{nres} after {time.monotonic() - t0:.0f}s",
                  file=sys.stderr)
            time.sleep(10)
        run_s = time.monotonic() - t0
        out_path = os.path.join(work, "out.jsonl")
        rc, wall, rss, _, err = measure([llmq, "results", batch, "-o", out_path, "--quiet"], env)
        assert rc == 0, err
        size = os.path.getsize(out_path)
        with open(out_path, "rb") as f:
            lines = sum(1 for _ in f)
        assert lines == nres, (lines, nres)
        rows.append(("results", nres, size, wall, rss))
        rc, wall, rss, _, err = measure([llmq, "results", batch, "-o", out_path, "--errors",
                                         os.path.join(work, "err.jsonl"), "--quiet"], env)
        assert rc == 0, err
        rows.append(("results --errors", nres, size, wall, rss))
        os.unlink(out_path)
    finally:
        c.close()

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(x.split(":", 1)[1].strip() for x in f if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    md = [f"Machine: {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}; "
          f"redis, broker and client on one host, loopback. "
          f"Results batch of {nres:,} finished by {a.workers} workers x {a.concurrency} "
          f"in {run_s:.0f} s (fake upstream, 0 ms).", "",
          "| operation | lines | file MiB | wall s | lines/s | peak RSS MiB |",
          "|---|---:|---:|---:|---:|---:|"]
    for op, n, size, wall, rss in rows:
        md.append(f"| {op} | {n:,} | {size / MIB:.0f} | {wall:.2f} | {n / wall:,.0f} | "
                  f"{rss / MIB:.1f} |")
    text = "\n".join(md) + "\n"
    print(text)
    if a.md:
        with open(a.md, "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
