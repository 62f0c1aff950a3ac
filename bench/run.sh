#!/bin/sh
# `make bench`: installs the benchmark's extra packages (the default list of
# scripts/install-deps.sh is left alone), then runs bench/run.py with Debian's
# Python, which owns python3-aiohttp/-celery/-redis. BENCH_QUICK=1 for a
# ~3-minute smoke run; BENCH_ONLY=a,b for some scenarios; LLMQ_BIN=DIR for
# other binaries (default build/). Writes bench/results/latest.json and
# docs/benchmarks.md (+ docs/img/*.png).
set -e
cd "$(dirname "$0")/.."
LLMQ_EXTRA_PKGS="gnuplot-nox python3-aiohttp python3-celery python3-redis wrk linux-perf time \
    nginx-light openssl valgrind" \
    sh scripts/install-deps.sh
start=$(date +%s)
/usr/bin/python3 bench/run.py "$@"
echo "bench: make bench took $(( $(date +%s) - start )) s (after the build)"
