#!/bin/sh
# Entrypoint of keda-harness's offline PostgreSQL image (ci/images/postgres.sh). It follows the official postgres
# image's contract so the container provider can use either image unchanged:
#   POSTGRES_USER (default postgres) is the superuser, POSTGRES_PASSWORD its password, POSTGRES_DB (default
#   POSTGRES_USER) is created, POSTGRES_HOST_AUTH_METHOD (default scram-sha-256) goes into the pg_hba line for
#   every TCP client, POSTGRES_INITDB_ARGS are passed to initdb. Arguments are passed to postgres (`-c k=v`).
# Like the official image it prints "PostgreSQL init process complete; ready for start up." on stdout after a
# fresh initdb; the server then logs "database system is ready to accept connections" on stderr.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
method=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$method" != trust ]; then
    echo "keda-harness postgres image: set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust)" >&2
    exit 1
  fi
  pwfile=$(mktemp)
  printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words, as in the official image.
  # --no-sync: a throwaway test server; skipping the fsyncs saves seconds per container start.
  initdb -D "$PGDATA" --no-sync --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host="$method" \
    ${POSTGRES_INITDB_ARGS:-} >/dev/null
  rm -f "$pwfile"
  # initdb's host lines cover only loopback inside the container; clients come through the Docker network.
  printf 'host all all all %s\n' "$method" >>"$PGDATA/pg_hba.conf"
  if [ "$db" != postgres ]; then
    quoted=$(printf '%s' "$db" | sed 's/"/""/g')
    printf 'CREATE DATABASE "%s";\n' "$quoted" | postgres --single -D "$PGDATA" -c fsync=off postgres >/dev/null
  fi
  echo "PostgreSQL init process complete; ready for start up."
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
