#!/usr/bin/env bash
# Builds the offline PostgreSQL image the container provider uses on machines without a registry:
#   debootstrap --variant=minbase --include=postgresql-15 bookworm ROOT MIRROR  ->  docker import
# The image honours the official postgres image's variables (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB,
# POSTGRES_HOST_AUTH_METHOD, POSTGRES_INITDB_ARGS, PGDATA) and logs the same readiness lines, so the harness
# treats both images alike. Skips when the image exists (FORCE=1 rebuilds).
# Usage: ci/images/postgres.sh [IMAGE]   (default keda-harness/postgres:15-bookworm; env KEDA_HARNESS_POSTGRES_IMAGE)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

image=${1:-${KEDA_HARNESS_POSTGRES_IMAGE:-keda-harness/postgres:15-bookworm}}
need_tool docker "apt-get install docker.io (and start dockerd: ci/prepare.sh does)"
need_tool debootstrap "apt-get install debootstrap"

if image_exists "$image" && [ -z "${FORCE:-}" ]; then
  echo "postgres image: $image exists (FORCE=1 rebuilds)"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "ci/images/postgres.sh runs debootstrap: run it as root" >&2; exit 1; }

mirror=$(debian_mirror)
root=$(mktemp -d /var/tmp/keda-harness-postgres-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
start=$(date +%s)
echo "postgres image: debootstrap bookworm from the machine's mirror into $root (about a minute)"
debootstrap --variant=minbase --include=postgresql-15 bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
  echo "debootstrap failed; last lines of $root.log:" >&2; tail -n 20 "$root.log" >&2; exit 1; }
rm -f "$root.log"
booted=$(date +%s)

# The package's own cluster (/var/lib/postgresql/15/main) is unused: the entrypoint initialises $PGDATA.
rm -rf "$root/var/lib/postgresql/15" "$root/etc/postgresql/15" "$root/var/cache/apt/archives/"*.deb \
       "$root/var/lib/apt/lists/"*
install -d -o 0 -g 0 "$root/usr/local/bin"
install -m 0755 "$here/postgres-entrypoint.sh" "$root/usr/local/bin/keda-harness-postgres-entrypoint"
pg_uid=$(chroot "$root" id -u postgres)
pg_gid=$(chroot "$root" id -g postgres)
install -d -o "$pg_uid" -g "$pg_gid" -m 0700 "$root/var/lib/postgresql/data"
install -d -o "$pg_uid" -g "$pg_gid" -m 2775 "$root/var/run/postgresql"

echo "postgres image: docker import as $image"
tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PGDATA=/var/lib/postgresql/data' \
  --change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'USER postgres' \
  --change 'EXPOSE 5432' \
  --change 'ENTRYPOINT ["/usr/local/bin/keda-harness-postgres-entrypoint"]' \
  --change 'CMD []' \
  -m "keda-harness offline PostgreSQL 15 (debootstrap bookworm minbase)" - "$image" >/dev/null
done_at=$(date +%s)
size=$(docker image inspect --format '{{.Size}}' "$image")
echo "postgres image: $image built in $((done_at - start)) s (debootstrap $((booted - start)) s, import $((done_at - booted)) s), $((size / 1000000)) MB"
