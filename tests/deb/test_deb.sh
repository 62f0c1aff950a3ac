#!/bin/sh
# make test-deb: builds the Debian package (CPack) and installs it into a
# clean Debian 12 container (llmq-base:12, built by deploy/base-image.sh's
# approach when missing), then checks what a packager and an operator rely
# on: dependencies resolve, `--version` on every binary, the systemd units
# pass `systemd-analyze verify`, the broker and a worker started exactly as
# their units start them (ExecStart + EnvironmentFile + the API key from the
# credentials file) run a batch, and `dpkg --purge` removes everything.
#
# The container resolves the package's dependencies from the Debian mirror
# (apt-get install ./llmq_*.deb), so this needs the network; it is therefore
# not part of `make test`. Prints SKIP and exits 0 without Docker.
set -eu
SRC="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD="${LLMQ_DEB_BUILD:-$SRC/build-deb}"
TAG="${LLMQ_BASE_TAG:-llmq-base:12}"
NAME="llmq-deb-test-$$"

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    echo "SKIP: test-deb needs Docker"
    exit 0
fi
if ! docker image inspect "$TAG" >/dev/null 2>&1; then
    if [ -x "$SRC/deploy/base-image.sh" ]; then
        TAG="$(nice -n 10 "$SRC/deploy/base-image.sh")"
    else
        echo "SKIP: no $TAG image and no deploy/base-image.sh to build it"
        exit 0
    fi
fi

echo "test-deb: building the package in $BUILD"
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
    -DLLMQ_WERROR=ON >/dev/null
nice -n 10 cmake --build "$BUILD" -j 2 >/dev/null
(cd "$BUILD" && rm -f llmq_*.deb && cpack -G DEB >/dev/null)
DEB="$(ls "$BUILD"/llmq_*.deb)"
echo "test-deb: $(basename "$DEB") ($(du -k "$DEB" | cut -f1) KiB)"

cleanup() { docker rm -f "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT INT TERM
docker run -d --name "$NAME" "$TAG" sleep 1800 >/dev/null
docker cp "$DEB" "$NAME:/tmp/"
docker cp "$SRC/tests/deb/in_container.sh" "$NAME:/tmp/"
timeout 900 docker exec "$NAME" sh /tmp/in_container.sh "/tmp/$(basename "$DEB")"
echo "test-deb: PASS"
