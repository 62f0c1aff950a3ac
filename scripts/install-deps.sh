#!/bin/sh
# Installs the Debian packages llmq needs to build, test and demo; a no-op
# when all are present. Runs apt-get as root (or through sudo when not root).
set -e
PKGS="build-essential cmake pkg-config libzmq3-dev libcurl4-openssl-dev libmsgpack-dev \
libhiredis-dev libjansson-dev libssl-dev libcmocka-dev redis-server python3 python3-zmq procps curl \
libmicrohttpd-dev python3-venv clang libclang-rt-14-dev \
prometheus tmux debootstrap redis-sentinel"
[ -n "$LLMQ_EXTRA_PKGS" ] && PKGS="$PKGS $LLMQ_EXTRA_PKGS"
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
echo "install-deps: installing:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing
# Debian starts redis-server as a service on install; llmq's tests and demo
# run their own instances on free ports, so the system one is not needed.
