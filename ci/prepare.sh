#!/usr/bin/env bash
# Installs and starts everything keda-harness's tests and main job need on a fresh Debian machine (run as root).
# Idempotent: a second run only checks. Every step says what it does; a failing step names itself.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
step() { printf '\n==> %s\n' "$*"; }
need_root() { [ "$(id -u)" = 0 ] || { echo "ci/prepare.sh installs packages: run it as root (or with sudo)." >&2; exit 1; }; }

# --- Debian packages -------------------------------------------------------------------------------------------
# postgresql: server binaries for the local PostgreSQL provider; docker.io: the daemon for the container provider
# and the kind backend's testcontainers; debootstrap: builds the offline PostgreSQL image (no registry here).
apt_pkgs=(postgresql postgresql-client docker.io debootstrap iproute2 ca-certificates curl)
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  need_root
  step "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian keeps the server binaries off PATH; the harness also looks in /usr/lib/postgresql/*/bin.

# docker-registry (github.com/docker/distribution): the image-source test (tests/keda_from_image.rs) starts its own
# on a free loopback port with storage in a temp dir. Its package would start a daemon on :5000 (all interfaces):
# a policy-rc.d that denies service starts is in place for the install, unless the machine has one already.
if ! dpkg -s docker-registry >/dev/null 2>&1; then
  need_root
  step "apt-get install docker-registry (not started: the test starts its own on loopback)"
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-registry >/dev/null
  if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# --- Docker daemon and offline images (container provider, kind backend's local pieces) ----------------------
# Starts dockerd when no daemon answers. HTTP(S)_PROXY point at a dead loopback port: no registry is reachable
# here, so an accidental pull fails at once instead of hanging. Images are built from Debian packages instead
# (ci/images/); each build is skipped when its image exists.
if ! docker info >/dev/null 2>&1; then
  need_root
  step "start dockerd (log /var/log/keda-harness-dockerd.log)"
  command -v dockerd >/dev/null || { echo "dockerd not found: apt-get install docker.io" >&2; exit 1; }
  mkdir -p /var/lib/docker /var/run/docker-exec
  HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY= \
    setsid nohup dockerd --host unix:///var/run/docker.sock --data-root /var/lib/docker \
      --exec-root /var/run/docker-exec --pidfile /var/run/keda-harness-dockerd.pid \
      >>/var/log/keda-harness-dockerd.log 2>&1 </dev/null &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not answer within 60 s; see /var/log/keda-harness-dockerd.log" >&2; tail -n 20 /var/log/keda-harness-dockerd.log >&2; exit 1; }
fi
step "offline images (ci/images/)"
bash "$here/ci/images/postgres.sh"
bash "$here/ci/images/debian-base.sh"
MOCK_AAD_PROFILE=dev bash "$here/ci/images/mock-aad.sh"

# --- Python clients for the conformance tests ---------------------------------------------------------------
step "Python clients (requirements in tests/conformance/python/requirements.txt)"
if [ -f "$here/tests/conformance/python/requirements.txt" ]; then
  python3 -m pip install -q --disable-pip-version-check -r "$here/tests/conformance/python/requirements.txt"
fi

# --- Go toolchain check --------------------------------------------------------------------------------------
command -v go >/dev/null || { echo "Go is required (KEDA, kube-apiserver and etcd are built from Go modules): install Go >= 1.26." >&2; exit 1; }

echo
echo "prepare: done"
