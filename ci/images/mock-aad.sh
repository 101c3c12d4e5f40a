#!/usr/bin/env bash
# Builds the mock-aad image from mock-aad/Dockerfile. No registry is reachable on this project's machines, so the
# Dockerfile's default base (a distroless glibc image) cannot be pulled: BASE_IMAGE is set to a local Debian
# bookworm image built offline by ci/images/debian-base.sh (the binary is built on Debian 12 against its glibc).
# Usage: ci/images/mock-aad.sh [IMAGE]        (default keda-harness/mock-aad:dev)
#   MOCK_AAD_BINARY=PATH   use this binary instead of building one
#   MOCK_AAD_PROFILE=P     cargo profile to build with (default release; ci/prepare.sh uses dev, which the test
#                          build that follows it reuses instead of compiling everything twice)
#   BASE=IMAGE             the FROM image (default keda-harness/debian:bookworm-minbase, built when missing;
#                          on a networked machine BASE=gcr.io/distroless/cc-debian12:nonroot, the Dockerfile's own)
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
  profile=${MOCK_AAD_PROFILE:-release}
  echo "mock-aad image: cargo build --profile $profile -p mock-aad"
  (cd "$repo" && cargo build --profile "$profile" -q -p mock-aad)
  target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  [ "$profile" = dev ] && binary="$target_dir/debug/mock-aad" || binary="$target_dir/$profile/mock-aad"
fi
[ -x "$binary" ] || { echo "mock-aad image: $binary is not an executable" >&2; exit 1; }
built=$(date +%s)

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
# A context holding only the binary (the repository root would send target/ to the daemon).
mkdir -p "$context/bin"
cp "$binary" "$context/bin/mock-aad"
DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE_IMAGE=$base" --build-arg BINARY=bin/mock-aad \
  -f "$repo/mock-aad/Dockerfile" -t "$image" "$context" >/dev/null
echo "mock-aad image: $image built in $(($(date +%s) - start)) s (binary $((built - start)) s, docker build $(($(date +%s) - built)) s)"
