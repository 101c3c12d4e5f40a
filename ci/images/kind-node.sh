#!/usr/bin/env bash
# Builds keda-harness's offline kind node image: what `kind build node-image` makes, without a registry.
# (`kind build node-image` fetches coredns, etcd, pause, kindnetd and local-path images from registries inside
# its build container, so it cannot run here.)
#
#   root file system  debootstrap bookworm from the machine's own mirror: systemd, Debian's containerd 1.6 and
#                     runc, CNI plugins (bridge, host-local, portmap), iptables, conntrack, ...
#   kind's layout     sigs.k8s.io/kind's images/base/files at the pinned kind version, read from its Go module
#                     (entrypoint, kubelet units, sysctl), plus /kind/version and /kind/manifests
#   Kubernetes        kubelet, kubeadm, kubectl and the control-plane images (kube-apiserver,
#                     kube-controller-manager, kube-scheduler, kube-proxy, etcd) built from k8s.io/kubernetes at
#                     the version harness/go/control-plane/go.mod pins, in the cache the local backend uses
#                     (target/keda-harness/control-plane/<version>/); pause from harness/go/node-tools
#   runc front        keda-harness-runc (harness/go/node-tools/cmd/runc-wrapper) as containerd's runc
#   CoreDNS, crictl   from their Go modules (kubeadm's CoreDNS version; crictl for `kind export logs`)
#
# The control-plane images are saved into /kind/images/ and imported into containerd when the node boots
# (keda-harness-images.service), before kubelet starts. The image is tagged keda-harness/kind-node:<version>;
# skipped when it exists with the same inputs (FORCE=1 rebuilds). Progress goes to stdout, one line per step with its time.
# Usage: ci/images/kind-node.sh [IMAGE]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
. "$here/lib.sh"

# The pinned versions. KUBERNETES_VERSION is the one harness/src/control_plane/build.rs names (a unit test checks
# that it and go.mod agree); kind's is the module the harness installs `kind` from (ci/prepare.sh).
kubernetes=$(sed -n 's/^pub const KUBERNETES_VERSION: &str = "\(v[0-9.]*\)";/\1/p' "$repo/harness/src/control_plane/build.rs")
etcd=$(sed -n 's/^pub const ETCD_VERSION: &str = "v\([0-9.]*\)";/\1/p' "$repo/harness/src/control_plane/build.rs")
kind_version=${KIND_VERSION:?set KIND_VERSION (ci/prepare.sh pins it)}
# kubeadm v1.35's image names (`kubeadm config images list`); etcd carries the version our etcd is (kind-config/
# offline.yaml tells kubeadm that tag), pause the one kubeadm v1.35 expects (constants.PauseVersion).
pause_tag=3.10.1
# CoreDNS at the version kubeadm v1.35 deploys (cmd/kubeadm/app/constants/constants.go, CoreDNSVersion), from
# its Go module.
coredns=v1.13.1
# crictl, which `kind export logs` runs in the node: the newest cri-tools release not newer than Kubernetes
# v1.35 that the Go module proxy serves (v1.35.0 is not served), from its Go module.
crictl=v1.34.0
image=${1:-keda-harness/kind-node:$kubernetes}
[ -n "$kubernetes" ] && [ -n "$etcd" ] || { echo "kind node image: cannot read KUBERNETES_VERSION/ETCD_VERSION from harness/src/control_plane/build.rs" >&2; exit 1; }

need_tool docker "apt-get install docker.io (and start dockerd: ci/prepare.sh does)"
need_tool go "install Go >= 1.26"
# What the image is made of, hashed: this script, ci/images/kind-node/, the node tools' source and the pinned
# versions. An image whose label holds another hash is rebuilt.
inputs=$( (cat "$0" "$here/debian-base.sh"; find "$here/kind-node" "$repo/harness/go/node-tools" -type f | sort | xargs cat;
  echo "$kubernetes $etcd $kind_version $pause_tag $coredns $crictl") | sha256sum | cut -c1-16)
if image_exists "$image" && [ -z "${FORCE:-}" ] \
   && [ "$(docker image inspect --format '{{index .Config.Labels "keda-harness.inputs"}}' "$image")" = "$inputs" ]; then
  echo "kind node image: $image is up to date (inputs $inputs; FORCE=1 rebuilds)"
  exit 0
fi
start=$(date +%s)
say() { echo "kind node image: $* ($(($(date +%s) - start)) s)"; }
# docker build with the classic builder (no BuildKit front end here), quiet unless it fails.
build() {
  local log; log=$(mktemp)
  if ! DOCKER_BUILDKIT=0 docker build -q "$@" >/dev/null 2>"$log"; then
    echo "kind node image: docker build $* failed:" >&2; cat "$log" >&2; rm -f "$log"; exit 1
  fi
  rm -f "$log"
}

# --- Go programs ---------------------------------------------------------------------------------------------
# Kubernetes' programs, into the local backend's cache (so the two share builds); the -ldflags are the version
# stamp harness/src/control_plane/build.rs sets (hack/lib/version.sh's variables), which kubeadm reads to check
# the control plane's version.
bins="$repo/target/keda-harness/control-plane/$kubernetes"
mkdir -p "$bins"
minor=$(echo "$kubernetes" | cut -d. -f2)
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$kubernetes -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
programs=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubeadm kubectl)
missing=()
for p in "${programs[@]}"; do [ -x "$bins/$p" ] || missing+=("k8s.io/kubernetes/cmd/$p"); done
[ -x "$bins/etcd" ] || missing+=(./cmd/etcd)
if [ ${#missing[@]} -gt 0 ]; then
  say "go build ${missing[*]} (Kubernetes $kubernetes; a cold Go cache takes about 10 minutes; log $bins/build-kind-node.log)"
  (cd "$repo/harness/go/control-plane" && GOTOOLCHAIN=local go build -trimpath -buildvcs=false -ldflags "$ldflags" \
      -o "$bins/" "${missing[@]}") >"$bins/build-kind-node.log" 2>&1 || {
    echo "kind node image: go build failed; last lines of $bins/build-kind-node.log:" >&2; tail -n 30 "$bins/build-kind-node.log" >&2; exit 1; }
fi
tools="$repo/target/keda-harness/node-tools"
mkdir -p "$tools"
(cd "$repo/harness/go/node-tools" && CGO_ENABLED=0 GOTOOLCHAIN=local go build -trimpath -buildvcs=false -ldflags "-s -w" \
    -o "$tools/" ./cmd/runc-wrapper ./cmd/pause)
if [ ! -x "$tools/coredns-$coredns" ]; then
  say "go install github.com/coredns/coredns@$coredns (a cold Go cache takes about 3 minutes)"
  (cd / && CGO_ENABLED=0 GOBIN="$tools/coredns.partial" GOTOOLCHAIN=local go install -trimpath -ldflags "-s -w" \
      "github.com/coredns/coredns@$coredns") >"$tools/build-coredns.log" 2>&1 || {
    echo "kind node image: building CoreDNS failed; last lines of $tools/build-coredns.log:" >&2; tail -n 30 "$tools/build-coredns.log" >&2; exit 1; }
  mv "$tools/coredns.partial/coredns" "$tools/coredns-$coredns" && rmdir "$tools/coredns.partial"
fi
if [ ! -x "$tools/crictl-$crictl" ]; then
  say "go install sigs.k8s.io/cri-tools/cmd/crictl@$crictl"
  (cd / && CGO_ENABLED=0 GOBIN="$tools/crictl.partial" GOTOOLCHAIN=local go install -trimpath -ldflags "-s -w" \
      "sigs.k8s.io/cri-tools/cmd/crictl@$crictl") >"$tools/build-crictl.log" 2>&1 || {
    echo "kind node image: building crictl failed; last lines of $tools/build-crictl.log:" >&2; tail -n 30 "$tools/build-crictl.log" >&2; exit 1; }
  mv "$tools/crictl.partial/crictl" "$tools/crictl-$crictl" && rmdir "$tools/crictl.partial"
fi
say "Go programs ready"

# kind's node layout, from its module (read-only files in Go's module cache; modes are set below).
kind_dir=$(cd / && go mod download -json "sigs.k8s.io/kind@$kind_version" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
[ -f "$kind_dir/images/base/files/usr/local/bin/entrypoint" ] || { echo "kind node image: $kind_dir has no images/base/files/usr/local/bin/entrypoint" >&2; exit 1; }

# --- bases ---------------------------------------------------------------------------------------------------
# Each base is tagged with a hash of its package list, so a changed list builds a new base.
node_packages=systemd,containerd,runc,containernetworking-plugins,iptables,nftables,conntrack,iproute2,ethtool,socat,util-linux,mount,kmod,libseccomp2,bash,jq,procps,pigz
proxy_packages=iptables,conntrack,kmod
tag_of() { echo "$1" | sha256sum | cut -c1-8; }
rootfs=keda-harness/debian:bookworm-kind-node-$(tag_of "$node_packages")
iptables_base=keda-harness/debian:bookworm-iptables-$(tag_of "$proxy_packages")
base=keda-harness/debian:bookworm-minbase
image_exists "$base" || bash "$here/debian-base.sh" "$base"
image_exists "$iptables_base" || bash "$here/debian-base.sh" "$iptables_base" "$proxy_packages"
image_exists "$rootfs" || bash "$here/debian-base.sh" "$rootfs" "$node_packages"
say "bases ready"

# --- control-plane images ------------------------------------------------------------------------------------
context=$(mktemp -d /var/tmp/keda-harness-kind-node.XXXXXX)
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/images" "$context/bin"
one_image() { # tag from binary...
  local tag=$1 from=$2; shift 2
  local dir; dir=$(mktemp -d "$context/img.XXXXXX")
  printf 'FROM %s\nENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n' "$from" >"$dir/Dockerfile"
  for b in "$@"; do cp "$b" "$dir/"; echo "COPY $(basename "$b") /usr/local/bin/" >>"$dir/Dockerfile"; done
  build -t "$tag" "$dir"
}
k=registry.k8s.io
one_image "$k/kube-apiserver:$kubernetes" "$base" "$bins/kube-apiserver"
one_image "$k/kube-controller-manager:$kubernetes" "$base" "$bins/kube-controller-manager"
one_image "$k/kube-scheduler:$kubernetes" "$base" "$bins/kube-scheduler"
one_image "$k/kube-proxy:$kubernetes" "$iptables_base" "$bins/kube-proxy"
one_image "$k/etcd:$etcd-0" "$base" "$bins/etcd"
printf 'FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n' >"$context/Dockerfile.pause"
cp "$tools/pause" "$context/pause"
build -f "$context/Dockerfile.pause" -t "$k/pause:$pause_tag" "$context"
rm -f "$context/pause" "$context/Dockerfile.pause"
# CoreDNS as its release image has it: /coredns, the entrypoint kubeadm's Deployment passes `-conf` to.
printf 'FROM scratch\nCOPY coredns /coredns\nENTRYPOINT ["/coredns"]\n' >"$context/Dockerfile.coredns"
cp "$tools/coredns-$coredns" "$context/coredns"
build -f "$context/Dockerfile.coredns" -t "$k/coredns/coredns:$coredns" "$context"
rm -f "$context/coredns" "$context/Dockerfile.coredns"
node_images=("$k/kube-apiserver:$kubernetes" "$k/kube-controller-manager:$kubernetes" "$k/kube-scheduler:$kubernetes"
  "$k/kube-proxy:$kubernetes" "$k/etcd:$etcd-0" "$k/pause:$pause_tag" "$k/coredns/coredns:$coredns")
# One archive: containerd stores the shared base layer once.
docker save "${node_images[@]}" -o "$context/images/control-plane.tar"
say "control-plane images saved ($(( $(stat -c %s "$context/images/control-plane.tar") / 1000000 )) MB)"

# --- the node image ------------------------------------------------------------------------------------------
mkdir -p "$context/kind-base"
cp -r "$kind_dir/images/base/files/." "$context/kind-base/"
chmod -R u+w "$context/kind-base"
rm -rf "$context/kind-base/LICENSES" "$context/kind-base/etc/containerd" "$context/kind-base/etc/systemd/system/containerd-fuse-overlayfs.service"
cp -r "$here/kind-node/files" "$context/files"
cp "$bins/kubelet" "$bins/kubeadm" "$bins/kubectl" "$context/bin/"
cp "$tools/runc-wrapper" "$context/bin/keda-harness-runc"
cp "$tools/crictl-$crictl" "$context/bin/crictl"
cp "$here/kind-node/Dockerfile" "$context/Dockerfile"
previous=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
build --build-arg "ROOTFS=$rootfs" --build-arg "KUBERNETES_VERSION=$kubernetes" --label "keda-harness.inputs=$inputs" \
  -t "$image" "$context"
# The image it replaces, unless a container still uses it (a kept cluster).
current=$(docker image inspect --format '{{.Id}}' "$image")
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then docker image rm "$previous" >/dev/null 2>&1 || true; fi
size=$(docker image inspect --format '{{.Size}}' "$image")
say "$image built, $((size / 1000000)) MB"
