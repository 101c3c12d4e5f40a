#!/usr/bin/env bash
# Builds a minimal Debian bookworm base image offline (debootstrap --variant=minbase from the machine's own apt
# mirror, then docker import): the FROM of mock-aad/Dockerfile where no registry is reachable. On a networked
# machine `debian:bookworm-slim` serves the same purpose. Skips when the image exists (FORCE=1 rebuilds).
# Usage: ci/images/debian-base.sh [IMAGE [PACKAGES]]   (default keda-harness/debian:bookworm-minbase; PACKAGES is a
# comma-separated list installed besides ca-certificates, as the kind node image's bases need)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

image=${1:-keda-harness/debian:bookworm-minbase}
packages=ca-certificates${2:+,$2}
need_tool docker "apt-get install docker.io (and start dockerd: ci/prepare.sh does)"
need_tool debootstrap "apt-get install debootstrap"
if image_exists "$image" && [ -z "${FORCE:-}" ]; then
  echo "base image: $image exists (FORCE=1 rebuilds)"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "ci/images/debian-base.sh runs debootstrap: run it as root" >&2; exit 1; }

mirror=$(debian_mirror)
root=$(mktemp -d /var/tmp/keda-harness-debian-rootfs.XXXXXX)
trap 'rm -rf "$root" "$root.log"' EXIT
start=$(date +%s)
echo "base image: debootstrap bookworm minbase from the machine's mirror into $root"
debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
  echo "debootstrap failed; last lines of $root.log:" >&2; tail -n 20 "$root.log" >&2; exit 1; }
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  -m "keda-harness offline Debian bookworm minbase ($packages)" - "$image" >/dev/null
size=$(docker image inspect --format '{{.Size}}' "$image")
echo "base image: $image built in $(($(date +%s) - start)) s, $((size / 1000000)) MB"
