#!/bin/sh
# Builds the Debian 12 base image locally when it is missing and prints its
# tag (llmq-base:12) on stdout; everything else goes to stderr.
#
# For machines without a container registry: debootstrap (minbase) into a
# scratch folder, trimmed like debian:12-slim, then `docker import`. The
# image stays in the engine, so later runs only print the tag. Concurrent
# callers wait for one another (flock). Needs root (debootstrap) and Debian's
# mirror; installs debootstrap with apt-get when it is missing.
#
#   LLMQ_BASE_TAG     tag to build (default llmq-base:12)
#   LLMQ_DEBIAN_MIRROR  mirror (default http://deb.debian.org/debian)
#   LLMQ_BASE_REBUILD=1 build again even when the tag exists
set -eu
TAG="${LLMQ_BASE_TAG:-llmq-base:12}"
MIRROR="${LLMQ_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
LOCK="${TMPDIR:-/tmp}/llmq-base-image.lock"

have_image() { docker image inspect "$TAG" >/dev/null 2>&1; }

if [ "${LLMQ_BASE_REBUILD:-0}" != 1 ] && have_image; then
    echo "$TAG"
    exit 0
fi

exec 9>"$LOCK"
flock 9
if [ "${LLMQ_BASE_REBUILD:-0}" != 1 ] && have_image; then
    echo "$TAG"     # built by the caller we waited for
    exit 0
fi

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v debootstrap >/dev/null 2>&1 && [ ! -x /usr/sbin/debootstrap ]; then
    echo "base-image: installing debootstrap" >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends debootstrap >&2 ||
        { $SUDO apt-get update -qq >&2 &&
          DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install \
              -y -qq --no-install-recommends debootstrap >&2; }
fi

ROOT="$(mktemp -d "${TMPDIR:-/var/tmp}/llmq-base.XXXXXX")"
trap '$SUDO rm -rf "$ROOT"' EXIT INT TERM
echo "base-image: debootstrap bookworm into $ROOT (a few minutes)" >&2
$SUDO env PATH="/usr/sbin:/sbin:$PATH" debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" >&2

# What debian:12-slim does: no docs, man pages or locales from later
# installs, no recommends, no apt caches in layers.
$SUDO sh -c "cat > '$ROOT/etc/apt/sources.list'" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb ${MIRROR%/debian}/debian-security bookworm-security main
EOF
$SUDO sh -c "cat > '$ROOT/etc/dpkg/dpkg.cfg.d/docker'" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
$SUDO sh -c "cat > '$ROOT/etc/apt/apt.conf.d/docker'" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Acquire::GzipIndexes "true";
EOF
$SUDO rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin \
    "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* \
    "$ROOT"/usr/share/locale/* "$ROOT"/var/log/*.log "$ROOT"/tmp/* 2>/dev/null || true
: | $SUDO tee "$ROOT/etc/machine-id" >/dev/null

$SUDO tar -C "$ROOT" --numeric-owner -c . |
    docker import --change 'CMD ["bash"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        - "$TAG" >&2
echo "base-image: built $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))" >&2
echo "$TAG"
