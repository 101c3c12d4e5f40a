// Command azidentity-client asks the real azidentity WorkloadIdentityCredential (the one KEDA's azure-workload
// pod identity uses) for a token and prints one JSON line on stdout: {"token":..,"expires_on":..} on success,
// {"error":..} on failure (exit status 1).
//
// It deliberately leaves the authority host at its default (https://login.microsoftonline.com/), exactly as
// KEDA does when AZURE_AUTHORITY_HOST is unset, so MSAL-go's real discovery path runs; the harness makes that
// host reach the mock (HTTPS_PROXY or a private /etc/hosts) and trusts the run's CA (SSL_CERT_FILE).
//
// The same source builds against two dependency sets: go.mod (azidentity v1.13.1 + MSAL-go v1.7.2, KEDA
// 2.20.2) and azidentity-1.7.0.mod (azidentity v1.7.0 + MSAL-go v1.2.2, KEDA 2.14.1/2.15.0), selected with
// `go build -modfile=...`.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

type result struct {
	Token     string `json:"token,omitempty"`
	ExpiresOn int64  `json:"expires_on,omitempty"`
	Error     string `json:"error,omitempty"`
}

func main() {
	// Empty flags fall back to AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_FEDERATED_TOKEN_FILE inside
	// azidentity, the way KEDA's operator gets them from the workload identity webhook.
	clientID := flag.String("client-id", "", "client id of the (user-assigned) identity; default $AZURE_CLIENT_ID")
	tenantID := flag.String("tenant-id", "", "tenant id; default $AZURE_TENANT_ID")
	tokenFile := flag.String("token-file", "", "file holding the federated assertion; default $AZURE_FEDERATED_TOKEN_FILE")
	scope := flag.String("scope", "https://ossrdbms-aad.database.windows.net/.default", "scope to request (KEDA's PostgreSQL scope by default)")
	timeout := flag.Duration("timeout", 60*time.Second, "overall deadline for GetToken")
	noRetry := flag.Bool("no-retry", false, "one try only (azcore retries failed requests 3 times by default, as in KEDA)")
	flag.Parse()

	out := json.NewEncoder(os.Stdout)
	opts := azidentity.WorkloadIdentityCredentialOptions{
		ClientID:      *clientID,
		TenantID:      *tenantID,
		TokenFilePath: *tokenFile,
	}
	if *noRetry {
		opts.ClientOptions.Retry = policy.RetryOptions{MaxRetries: -1}
	}
	cred, err := azidentity.NewWorkloadIdentityCredential(&opts)
	if err != nil {
		_ = out.Encode(result{Error: "NewWorkloadIdentityCredential: " + err.Error()})
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{*scope}})
	if err != nil {
		_ = out.Encode(result{Error: err.Error()})
		os.Exit(1)
	}
	_ = out.Encode(result{Token: tok.Token, ExpiresOn: tok.ExpiresOn.Unix()})
}
