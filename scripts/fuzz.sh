#!/bin/sh
# Builds and runs llmq's libFuzzer targets (tests/fuzz/fuzz_*.c) with clang,
# ASan and UBSan, in build-fuzz/ (or $FUZZ_BUILD).
#
#   scripts/fuzz.sh list                  names of the targets
#   scripts/fuzz.sh build                 builds every target
#   scripts/fuzz.sh run TARGET SECONDS    fuzzes one target; the corpus grows
#                                         in build-fuzz/corpus/TARGET, seeded
#                                         from tests/fuzz/seeds/TARGET
#   scripts/fuzz.sh smoke SECONDS         every target for SECONDS over its
#                                         seeds (the ctest entry fuzz.smoke)
# A crash leaves crash-* in build-fuzz/artifacts/TARGET/; copy it into
# tests/fuzz/seeds/TARGET/ with the fix so that `make test` replays it.
set -e
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${FUZZ_BUILD:-$SRC/build-fuzz}
JOBS=${JOBS:-2}

targets() {
    for f in "$SRC"/tests/fuzz/fuzz_*.c; do
        n=$(basename "$f" .c)
        echo "${n#fuzz_}"
    done
}

build() {
    if ! command -v clang >/dev/null 2>&1; then
        echo "fuzz: clang is missing (scripts/install-deps.sh installs it)" >&2
        exit 1
    fi
    CC=clang cmake -S "$SRC" -B "$BUILD" -DLLMQ_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
    tl=""
    for t in $(targets); do tl="$tl --target fuzz_$t"; done
    # shellcheck disable=SC2086
    cmake --build "$BUILD" -j "$JOBS" $tl >/dev/null
}

# run TARGET SECONDS [extra libFuzzer flags...]
run() {
    t=$1
    s=$2
    shift 2
    [ -f "$SRC/tests/fuzz/fuzz_$t.c" ] || { echo "fuzz: no target '$t' (try: list)" >&2; exit 1; }
    mkdir -p "$BUILD/corpus/$t" "$BUILD/artifacts/$t"
    "$BUILD/fuzz_$t" -max_total_time="$s" -print_final_stats=1 \
        -artifact_prefix="$BUILD/artifacts/$t/" "$@" \
        "$BUILD/corpus/$t" "$SRC/tests/fuzz/seeds/$t"
}

case "${1:-}" in
list) targets ;;
build) build ;;
run)
    [ $# -ge 3 ] || { echo "usage: $0 run TARGET SECONDS" >&2; exit 1; }
    run "$2" "$3"
    ;;
smoke)
    build
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    for t in $(targets); do
        mkdir -p "$tmp/$t"
        echo "fuzz: $t"
        "$BUILD/fuzz_$t" -max_total_time="${2:-3}" -artifact_prefix="$tmp/" \
            "$tmp/$t" "$SRC/tests/fuzz/seeds/$t" 2>"$tmp/$t.log" || {
            tail -40 "$tmp/$t.log" >&2
            echo "fuzz: $t FAILED" >&2
            exit 1
        }
        grep -E '^Done|INITED' "$tmp/$t.log" | tail -1
    done
    ;;
*)
    echo "usage: $0 list | build | run TARGET SECONDS | smoke SECONDS" >&2
    exit 1
    ;;
esac
