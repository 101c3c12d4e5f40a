#!/usr/bin/env python3
"""Connect to PostgreSQL with a real Python driver and print one JSON line with the outcome.

Used by tests/pg_conformance.rs. Drivers:
  psycopg  -- libpq underneath: refuses to send an empty password (`fe_sendauth: no password supplied`).
  pg8000   -- pure protocol: sends what it is given, so an empty password reaches the server and the
              server's ErrorResponse fields come back as a dict.

usage: pg_clients.py DRIVER HOST PORT USER DBNAME SSLMODE PASSWORD [QUERY]
"""
import json
import ssl
import sys


def run_psycopg(host, port, user, dbname, sslmode, password, query):
    import psycopg

    try:
        with psycopg.connect(host=host, port=port, user=user, dbname=dbname, sslmode=sslmode,
                             password=password, connect_timeout=10) as conn:
            value = conn.execute(query).fetchone()[0]
            return {"ok": True, "value": str(value), "version": psycopg.__version__}
    except psycopg.Error as e:
        diag = getattr(e, "diag", None)
        return {"ok": False, "error": str(e), "sqlstate": getattr(e, "sqlstate", None),
                "severity": diag.severity_nonlocalized if diag else None, "version": psycopg.__version__}


def run_pg8000(host, port, user, dbname, sslmode, password, query):
    import pg8000.native

    ctx = None
    if sslmode != "disable":
        # sslmode=require semantics: encrypt, do not verify (what KEDA's connection string asks for).
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        conn = pg8000.native.Connection(user, host=host, port=int(port), database=dbname,
                                        password=password, ssl_context=ctx, timeout=10)
        value = conn.run(query)[0][0]
        conn.close()
        return {"ok": True, "value": str(value), "version": pg8000.__version__}
    except pg8000.native.DatabaseError as e:
        fields = e.args[0] if e.args and isinstance(e.args[0], dict) else {}
        return {"ok": False, "error": str(e), "fields": fields, "version": pg8000.__version__}
    except Exception as e:  # interface errors: the server closed, TLS failed, ...
        return {"ok": False, "error": f"{type(e).__name__}: {e}", "fields": {}, "version": pg8000.__version__}


def main():
    if len(sys.argv) < 8:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    driver, host, port, user, dbname, sslmode, password = sys.argv[1:8]
    query = sys.argv[8] if len(sys.argv) > 8 else "SELECT COUNT(*) FROM movies"
    run = {"psycopg": run_psycopg, "pg8000": run_pg8000}[driver]
    print(json.dumps(run(host, port, user, dbname, sslmode, password, query)))


if __name__ == "__main__":
    main()
