#!/bin/sh
# ctest install.destdir: `cmake --install` of the build tree into a DESTDIR
# puts the binaries, the systemd units (pointing at the installed binaries),
# the example settings, the docs and the Prometheus/Grafana files under it,
# and nothing outside it. Argument: the build directory.
set -eu
BUILD="$1"
ROOT="$(mktemp -d "${TMPDIR:-/tmp}/llmq-destdir.XXXXXX")"
trap 'rm -rf "$ROOT"' EXIT INT TERM
DESTDIR="$ROOT" cmake --install "$BUILD" >/dev/null
PREFIX="$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$BUILD/CMakeCache.txt")"
P="$ROOT$PREFIX"
for f in bin/llmq bin/llmq-broker bin/llmq-worker lib/systemd/system/llmq-broker.service \
         lib/systemd/system/llmq-worker@.service share/doc/llmq/operations.md \
         share/llmq/prometheus/llmq-alerts.yml share/llmq/grafana/llmq-dashboard.json; do
    [ -e "$P/$f" ] || { echo "missing $P/$f"; exit 1; }
done
ls "$ROOT"/usr/local/etc/llmq/broker.env "$ROOT"/etc/llmq/broker.env 2>/dev/null | grep -q . ||
    { echo "missing broker.env"; exit 1; }
grep -qx "ExecStart=$PREFIX/bin/llmq-broker" "$P/lib/systemd/system/llmq-broker.service"
grep -q "LoadCredential=api-key:" "$P/lib/systemd/system/llmq-worker@.service"
"$P/bin/llmq" --version | grep -q "^llmq "
echo "install.destdir: ok ($(find "$ROOT" -type f | wc -l) files under DESTDIR)"
