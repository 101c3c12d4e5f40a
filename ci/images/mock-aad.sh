#!/usr/bin/env bash
# Builds the mock-aad image from mock-aad/Dockerfile (see the comments there for why FROM is a local image).
# Usage: ci/images/mock-aad.sh [IMAGE]        (default keda-harness/mock-aad:dev)
#   MOCK_AAD_BINARY=PATH   use this binary instead of `cargo build --release -p mock-aad`
#   BASE=IMAGE             the FROM image (default keda-harness/debian:bookworm-minbase, built when missing)
# Always rebuilds (the binary changes with the code); Docker's layer cache makes an unchanged build cheap.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
. "$here/lib.sh"

image=${1:-keda-harness/mock-aad:dev}
base=${BASE:-keda-harness/debian:bookworm-minbase}
need_tool docker "apt-get install docker.io (and start dockerd: ci/prepare.sh does)"
start=$(date +%s)
if [ "$base" = keda-harness/debian:bookworm-minbase ] && ! image_exists "$base"; then
  bash "$here/debian-base.sh" "$base"
fi
image_exists "$base" || { echo "mock-aad image: base image $base is not on this machine (no registry here): build it or set BASE" >&2; exit 1; }

binary=${MOCK_AAD_BINARY:-}
if [ -z "$binary" ]; then
  need_tool cargo "install Rust (rustup)"
  echo "mock-aad image: cargo build --release -p mock-aad"
  (cd "$repo" && cargo build --release -q -p mock-aad)
  binary="$repo/target/release/mock-aad"
fi
[ -x "$binary" ] || { echo "mock-aad image: $binary is not an executable" >&2; exit 1; }
built=$(date +%s)

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/mock-aad"
DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$base" -f "$repo/mock-aad/Dockerfile" -t "$image" "$context" >/dev/null
echo "mock-aad image: $image built in $(($(date +%s) - start)) s (binary $((built - start)) s, docker build $(($(date +%s) - built)) s)"
