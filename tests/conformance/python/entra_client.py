#!/usr/bin/env python3
"""Ask a real Python Entra client for a token with a federated client assertion; print one JSON line.

Clients (``--client``):
  azure-identity  azure.identity.WorkloadIdentityCredential (reads the assertion from --token-file)
  msal            msal.ConfidentialClientApplication with client_credential={"client_assertion": ...}

Both keep Entra's default authority host (https://login.microsoftonline.com, or AZURE_AUTHORITY_HOST when the
caller sets it), exactly as an application in a pod would; the test harness makes that host reach the mock
through HTTPS_PROXY and has the run's CA trusted through REQUESTS_CA_BUNDLE.

Output: {"token": ..., "expires_on": ...} and exit 0, or {"error": ...} and exit 1.
"""

import argparse
import json
import os
import sys
import time

PG_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"


def with_azure_identity(args):
    from azure.identity import WorkloadIdentityCredential

    cred = WorkloadIdentityCredential(
        tenant_id=args.tenant_id, client_id=args.client_id, token_file_path=args.token_file
    )
    tok = cred.get_token(args.scope)
    return {"token": tok.token, "expires_on": tok.expires_on}


def with_msal(args):
    import msal

    authority_host = os.environ.get("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com").rstrip("/")

    def read_assertion():
        # A callable, so a rotated projected token is re-read, as the workload identity docs recommend.
        with open(args.token_file, encoding="utf-8") as f:
            return f.read().strip()

    app = msal.ConfidentialClientApplication(
        args.client_id,
        authority=f"{authority_host}/{args.tenant_id}",
        client_credential={"client_assertion": read_assertion},
    )
    result = app.acquire_token_for_client(scopes=[args.scope])
    if "access_token" not in result:
        # MSAL returns Entra's error body as a dict instead of raising.
        raise RuntimeError(
            f"{result.get('error')}: {result.get('error_description')} (error_codes={result.get('error_codes')})"
        )
    return {"token": result["access_token"], "expires_on": int(time.time()) + int(result["expires_in"])}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--client", choices=["azure-identity", "msal"], required=True)
    p.add_argument("--client-id", default=os.environ.get("AZURE_CLIENT_ID"))
    p.add_argument("--tenant-id", default=os.environ.get("AZURE_TENANT_ID"))
    p.add_argument("--token-file", default=os.environ.get("AZURE_FEDERATED_TOKEN_FILE"))
    p.add_argument("--scope", default=PG_SCOPE)
    args = p.parse_args()
    run = with_azure_identity if args.client == "azure-identity" else with_msal
    try:
        out = run(args)
    except Exception as e:  # noqa: BLE001 - the caller wants the client's own message, whatever its type
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
