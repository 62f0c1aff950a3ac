#!/bin/sh
# make test-builds: what a packager does, from a clean checkout of HEAD
# (git archive, so no build tree or generated file leaks in): Release, Debug
# and MinSizeRel with Debian's gcc and clang, each with plain cmake (no
# LLMQ_WERROR: warnings must not fail a packager's build) and then again with
# -DLLMQ_WERROR=ON to prove there are no warnings at all. Every build must
# produce binaries whose --version prints. CPU-heavy (12 builds): run it under
# nice; not part of `make test`.
set -eu
SRC="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/llmq-builds.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT INT TERM
git -C "$SRC" archive --format=tar HEAD | tar -C "$WORK" -x -f - 2>/dev/null ||
    { mkdir -p "$WORK"; cp -a "$SRC"/. "$WORK"/; rm -rf "$WORK"/build*; }
fail=0
for cc in gcc clang; do
    command -v $cc >/dev/null || { echo "SKIP $cc: not installed"; continue; }
    for type in Release Debug MinSizeRel; do
        for werror in OFF ON; do
            b="$WORK/b-$cc-$type-$werror"
            if CC=$cc cmake -S "$WORK" -B "$b" -DCMAKE_BUILD_TYPE=$type -DLLMQ_WERROR=$werror \
                    >"$b.log" 2>&1 && nice -n 10 cmake --build "$b" -j "${JOBS:-2}" >>"$b.log" 2>&1 &&
                    "$b/llmq" --version >/dev/null && "$b/llmq-broker" --version >/dev/null &&
                    "$b/llmq-worker" --version >/dev/null; then
                echo "ok   $cc $type LLMQ_WERROR=$werror ($(grep -c 'warning:' "$b.log" || true) warnings)"
            else
                echo "FAIL $cc $type LLMQ_WERROR=$werror:"; tail -20 "$b.log"; fail=1
            fi
            rm -rf "$b"
        done
    done
done
exit $fail
