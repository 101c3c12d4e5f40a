# Shared helpers for the offline image builds in ci/images/ (sourced, not run).
# No registry is reachable on this project's machines, so every image is built from a Debian root file system
# (debootstrap from the machine's own apt mirror) or from scratch, then `docker import`ed / `docker build`ed.

# The Debian mirror this machine's apt already uses. Read at run time so that no host name is written into the
# repository; KEDA_HARNESS_DEBIAN_MIRROR overrides it.
debian_mirror() {
  if [ -n "${KEDA_HARNESS_DEBIAN_MIRROR:-}" ]; then echo "$KEDA_HARNESS_DEBIAN_MIRROR"; return; fi
  local uri
  # deb822 sources (`URIs: ...`) and one-line sources (`deb URI suite ...`); the main archive ends in /debian.
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' \
          | grep -E '/debian/?$' | head -n1 || true)
  if [ -z "$uri" ]; then
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}' \
            | grep -E '/debian/?$' | head -n1 || true)
  fi
  if [ -z "$uri" ]; then
    echo "no Debian mirror found in /etc/apt/sources.list{,.d/}: set KEDA_HARNESS_DEBIAN_MIRROR=<http://.../debian>" >&2
    return 1
  fi
  echo "$uri"
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

need_tool() {
  command -v "$1" >/dev/null || { echo "ci/images: \`$1\` not found; $2" >&2; exit 1; }
}
