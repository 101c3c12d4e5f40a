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
#
# Which dockerd: the PostgreSQL and mock-aad containers go through testcontainers-rs, which sends Engine API 1.53
# on every request. Debian 12's docker.io (20.10) speaks 1.41, so where the installed dockerd is older than 29
# this script builds moby's engine (harness/go/dockerd: dockerd and docker-proxy from github.com/moby/moby/v2)
# into /usr/local/lib/keda-harness/ and runs that instead, on Debian's containerd and runc, keeping the image
# store the old daemon used (containerd-snapshotter off). A daemon someone else started is left alone.
#
# Where the kernel's capability bounding set lacks CAP_SYS_RESOURCE (this project's CI machines), runc cannot
# start a `--privileged` container, so kind's node cannot start: dockerd then runs containers through
# keda-harness-runc (harness/go/node-tools/cmd/runc-wrapper), which drops that capability from the spec. Only
# there: on other machines dockerd keeps its own runc.
min_api=1.53  # harness/src/postgres/container.rs, MIN_ENGINE_API
moby_version=$(awk '$1 == "github.com/moby/moby/v2" {print $2}' "$here/harness/go/dockerd/go.mod")
api_at_least() { printf '%s\n%s\n' "$min_api" "$1" | sort -V -C; }
dockerd_bin=dockerd
dockerd_args=()
installed_major=$(dockerd --version 2>/dev/null | sed -n 's/^Docker version \([0-9]*\)\..*/\1/p')
if [ -z "$installed_major" ] || [ "$installed_major" -lt 29 ]; then
  moby_dir=/usr/local/lib/keda-harness/moby-$moby_version
  if [ ! -x "$moby_dir/dockerd" ] || [ ! -x "$moby_dir/docker-proxy" ]; then
    need_root
    command -v go >/dev/null || { echo "Go is required to build dockerd (harness/go/dockerd): install Go >= 1.26" >&2; exit 1; }
    step "build dockerd and docker-proxy from github.com/moby/moby/v2@$moby_version (installed dockerd: ${installed_major:-none}; testcontainers needs API >= $min_api; a cold Go cache takes about 6 minutes)"
    mkdir -p "$moby_dir.partial"
    log=/var/log/keda-harness-moby-build.log
    (cd "$here/harness/go/dockerd" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod go build -trimpath -buildvcs=false \
        -ldflags "-s -w -X github.com/moby/moby/v2/dockerversion.Version=moby-$moby_version" -o "$moby_dir.partial/" \
        github.com/moby/moby/v2/cmd/dockerd github.com/moby/moby/v2/cmd/docker-proxy) >"$log" 2>&1 || {
      echo "building dockerd failed; last lines of $log:" >&2; tail -n 30 "$log" >&2; exit 1; }
    rm -rf "$moby_dir" && mv "$moby_dir.partial" "$moby_dir"
  fi
  dockerd_bin=$moby_dir/dockerd
  dockerd_args+=(--userland-proxy-path "$moby_dir/docker-proxy" --feature containerd-snapshotter=false)
  # moby's default spec asks for a time namespace; runc before 1.2 (Debian 12 has 1.1.5) does not know one.
  if ! runc features 2>/dev/null | python3 -c 'import json, sys; sys.exit("time" not in json.load(sys.stdin)["linux"]["namespaces"])' 2>/dev/null; then
    dockerd_args+=(--feature time-namespaces=false)
  fi
fi
runc_front=
capbnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
if [ -n "$capbnd" ] && (( ((16#$capbnd) >> 24 & 1) == 0 )); then
  runc_front=/usr/local/lib/keda-harness/keda-harness-runc
  if [ ! -x "$runc_front" ] || [ -n "$(find "$here/harness/go/node-tools" -newer "$runc_front" -type f | head -n1)" ]; then
    need_root
    command -v go >/dev/null || { echo "Go is required to build keda-harness-runc (harness/go/node-tools): install Go >= 1.26" >&2; exit 1; }
    step "build keda-harness-runc (this machine's capability bounding set lacks CAP_SYS_RESOURCE)"
    mkdir -p "$(dirname "$runc_front")"
    (cd "$here/harness/go/node-tools" && CGO_ENABLED=0 GOTOOLCHAIN=local go build -trimpath -buildvcs=false \
        -ldflags "-s -w" -o "$runc_front.partial" ./cmd/runc-wrapper) && mv "$runc_front.partial" "$runc_front"
  fi
  dockerd_args+=(--add-runtime "keda-harness-runc=$runc_front" --default-runtime keda-harness-runc)
fi
# A running daemon this script started earlier is restarted when it lacks the front or speaks too old an API;
# someone else's is left alone, with what to change.
if docker info >/dev/null 2>&1; then
  api=$(docker version --format '{{.Server.APIVersion}}' 2>/dev/null || echo 0)
  runtime=$(docker info --format '{{.DefaultRuntime}}')
  if ! api_at_least "$api" || { [ -n "$runc_front" ] && [ "$runtime" != keda-harness-runc ]; }; then
    if [ -f /var/run/keda-harness-dockerd.pid ] && kill -0 "$(cat /var/run/keda-harness-dockerd.pid)" 2>/dev/null; then
      step "restart dockerd ($dockerd_bin; API $api before, default runtime $runtime before)"
      old=$(cat /var/run/keda-harness-dockerd.pid)
      kill "$old"
      # Until it has exited: it removes its pid file last, and a new dockerd refuses to start beside that file.
      for _ in $(seq 1 60); do kill -0 "$old" 2>/dev/null || break; sleep 1; done
    else
      echo "note: this machine's dockerd was not started by ci/prepare.sh (API $api, default runtime $runtime)." >&2
      api_at_least "$api" || echo "      testcontainers-rs needs Engine API >= $min_api (Docker >= 29): upgrade it." >&2
      [ -n "$runc_front" ] && [ "$runtime" != keda-harness-runc ] && {
        echo "      Privileged containers (kind's nodes) fail here until it runs keda-harness-runc: add to /etc/docker/daemon.json" >&2
        echo "      {\"runtimes\": {\"keda-harness-runc\": {\"path\": \"$runc_front\"}}, \"default-runtime\": \"keda-harness-runc\"} and restart it" >&2; }
    fi
  fi
fi
if ! docker info >/dev/null 2>&1; then
  need_root
  step "start $dockerd_bin (log /var/log/keda-harness-dockerd.log)"
  command -v "$dockerd_bin" >/dev/null || { echo "dockerd not found: apt-get install docker.io" >&2; exit 1; }
  mkdir -p /var/lib/docker /var/run/docker-exec
  HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY= \
    setsid nohup "$dockerd_bin" --host unix:///var/run/docker.sock --data-root /var/lib/docker \
      --exec-root /var/run/docker-exec --pidfile /var/run/keda-harness-dockerd.pid "${dockerd_args[@]}" \
      >>/var/log/keda-harness-dockerd.log 2>&1 </dev/null &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not answer within 60 s; see /var/log/keda-harness-dockerd.log" >&2; tail -n 20 /var/log/keda-harness-dockerd.log >&2; exit 1; }
  echo "dockerd: $(docker version --format 'server {{.Server.Version}}, API {{.Server.APIVersion}}, default runtime')" \
    "$(docker info --format '{{.DefaultRuntime}}')"
fi
step "offline images (ci/images/)"
bash "$here/ci/images/postgres.sh"
bash "$here/ci/images/debian-base.sh"
MOCK_AAD_PROFILE=dev bash "$here/ci/images/mock-aad.sh"
# kind, from its Go module at one version; the node image follows that version's layout.
kind_version=v0.33.0
KIND_VERSION=$kind_version bash "$here/ci/images/kind-node.sh"
if ! kind version 2>/dev/null | grep -q "^kind $kind_version "; then
  need_root
  step "go install sigs.k8s.io/kind@$kind_version into /usr/local/bin"
  GOBIN=/usr/local/bin GOTOOLCHAIN=local go install "sigs.k8s.io/kind@$kind_version"
fi

# --- Python clients for the conformance tests ---------------------------------------------------------------
step "Python clients (requirements in tests/conformance/python/requirements.txt)"
if [ -f "$here/tests/conformance/python/requirements.txt" ]; then
  python3 -m pip install -q --disable-pip-version-check -r "$here/tests/conformance/python/requirements.txt"
fi

# --- Go toolchain check --------------------------------------------------------------------------------------
command -v go >/dev/null || { echo "Go is required (KEDA, kube-apiserver and etcd are built from Go modules): install Go >= 1.26." >&2; exit 1; }

echo
echo "prepare: done"
