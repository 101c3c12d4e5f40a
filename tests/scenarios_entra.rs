//! The Entra side of the scenario library on the local backend: each scenario on the oldest and newest KEDA
//! version it is about (2.15.0, the first to ask Entra, and 2.21.0), plus 2.14.1 once to show that it never
//! asks Entra. Each case runs the scenario exactly as `keda-harness run --scenario NAME --keda VERSION` does;
//! the verdict is the harness's own judgement of the scenario's expectations, whose texts come from KEDA,
//! azidentity and Entra's public samples (cited in each scenario.yaml). Cases run side by side: every world
//! has its own control plane, loopback address and work dir.

use keda_harness_tests::scenario_cell::{assert_cell_passed, run_cell};
use rstest::rstest;

/// azidentity's prefix of a failed credential (sdk/azidentity errors.go, AuthenticationFailedError.Error:
/// "%s authentication failed. %s", with credNameWorkloadIdentity = "WorkloadIdentityCredential"; v1.7.0, which
/// KEDA 2.15.0 pins, and v1.14.1, which 2.21.0 pins).
const WORKLOAD_IDENTITY_FAILED: &str = "WorkloadIdentityCredential authentication failed";
/// MSAL-go v1.2.2 (KEDA 2.15.0) failing the tenant discovery, without the response (apps/internal/oauth/oauth.go:
/// "unable to resolve an endpoint: %s"), behind azidentity's "%s: %s" for an error without a response.
const ENDPOINT_UNRESOLVED: &str = "WorkloadIdentityCredential: unable to resolve an endpoint";
/// Azure Database for PostgreSQL's answer to an empty password, as KEDA < 2.15.0 sends (kedacore/keda#6654).
const EMPTY_PASSWORD: &str = "empty password returned by client";

#[rstest]
#[case::wrong_identity_id_2_14_1("wrong-identity-id", "2.14.1", Some(EMPTY_PASSWORD))]
#[case::wrong_identity_id_2_15_0("wrong-identity-id", "2.15.0", Some(WORKLOAD_IDENTITY_FAILED))]
#[case::wrong_identity_id_2_21_0("wrong-identity-id", "2.21.0", Some(WORKLOAD_IDENTITY_FAILED))]
#[case::fic_on_workload_sa_2_15_0("fic-on-workload-sa", "2.15.0", Some(WORKLOAD_IDENTITY_FAILED))]
#[case::fic_on_workload_sa_2_21_0("fic-on-workload-sa", "2.21.0", Some(WORKLOAD_IDENTITY_FAILED))]
#[case::fic_wrong_audience_2_15_0("fic-wrong-audience", "2.15.0", Some(WORKLOAD_IDENTITY_FAILED))]
#[case::fic_wrong_audience_2_21_0("fic-wrong-audience", "2.21.0", Some(WORKLOAD_IDENTITY_FAILED))]
#[case::wrong_tenant_2_15_0("wrong-tenant", "2.15.0", Some(ENDPOINT_UNRESOLVED))]
#[case::wrong_tenant_2_21_0("wrong-tenant", "2.21.0", Some(WORKLOAD_IDENTITY_FAILED))]
#[case::token_expiry_2_15_0("token-expiry", "2.15.0", None)]
#[case::token_expiry_2_21_0("token-expiry", "2.21.0", None)]
// The outage's error does not decide a cell that scales again: it is counted among the transient errors.
#[case::entra_outage_2_15_0("entra-outage", "2.15.0", None)]
#[case::entra_outage_2_21_0("entra-outage", "2.21.0", None)]
#[tokio::test(flavor = "multi_thread")]
async fn scenario_on_keda(
    #[case] scenario: &str,
    #[case] keda: &str,
    #[case] deciding_error_carries: Option<&str>,
) {
    let Some(run) = run_cell(scenario, keda).await else {
        return;
    };
    assert_cell_passed(&run);
    let v = &run.verdict;
    match deciding_error_carries {
        Some(text) => {
            let first = v
                .deciding_error
                .as_ref()
                .map(|d| d.text.as_str())
                .unwrap_or_default();
            assert!(
                first.contains(text),
                "{scenario}@{keda}: deciding error `{first}` lacks `{text}`"
            );
        }
        None => assert!(
            v.deciding_error.is_none(),
            "{scenario}@{keda}: {}",
            run.table
        ),
    }
    if scenario == "entra-outage" {
        assert!(
            v.transient_errors
                .iter()
                .any(|t| t.text.contains(WORKLOAD_IDENTITY_FAILED)),
            "{scenario}@{keda}: the outage's `{WORKLOAD_IDENTITY_FAILED}` is not among the transient errors: {:#?}",
            v.transient_errors
        );
    }
    // The operator's tokens carried the AKS-shaped issuer of the scenario's tenant, and the report says so.
    let issuer = v
        .manifest_changes
        .iter()
        .find(|c| c.field == "--service-account-issuer")
        .unwrap_or_else(|| panic!("{scenario}@{keda}: the issuer change is not in the report"));
    assert!(
        issuer.to.starts_with(
            "https://eastus.oic.prod-aks.azure.com/9b2c4f3e-7a1d-4e8b-b6c5-2f0e1d3a4c5b/"
        ) && issuer.to.ends_with('/'),
        "{issuer}"
    );
    // Failing cells name their fix.
    if v.observed.starts_with("scaler error") {
        assert!(v.hint.is_some(), "{scenario}@{keda}: no hint");
    }
}
