//! What the kind backend would do for a matrix's cells (`--backend kind --plan`): per cell the kind cluster,
//! the images it loads, the objects it applies, KEDA's Helm values at the catalog's chart version, the tool
//! commands in order, and the scenario's manifests — rendered from the same [`KindPlan`] that
//! [`super::KindEnvironment::up`] runs. Material made at run time (the CA, mock-aad's certificate, the
//! PostgreSQL container's address) is shown as a placeholder.

use std::net::{Ipv4Addr, SocketAddr};

use super::mock_aad::{kind_trusted_issuer, KIND_SERVICE_ACCOUNT_ISSUER};
use super::{KindPlan, KindSettings, MockAadInCluster, TlsPair};
use crate::backend::webhook::WorkloadIdentity;
use crate::backend::{BackendPlan, CellSpec, PlanStep};

/// A PEM made when the cell runs.
const RUN_TIME_PEM: &str = "<generated when the cell runs>";
/// The PostgreSQL container's address on the kind network is known once it runs.
const UPSTREAM_PLACEHOLDER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5432);

/// A kind cluster name for a cell: `kh-` + the label's letters and digits (kind names are DNS labels).
pub fn cluster_name(label: &str) -> String {
    let mut name: String = format!("kh-{label}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(40);
    name.trim_end_matches('-').to_string()
}

/// The settings of `cell` as the kind backend renders them.
pub fn settings_for(cell: &CellSpec<'_>) -> anyhow::Result<KindSettings> {
    let s = cell.scenario;
    let registered = crate::azure_postgres::registered_client_id(s)?;
    let identity = WorkloadIdentity {
        client_id: registered.clone(),
        tenant_id: s.file.identity.tenant_id.clone(),
    };
    // The credential's subject is the scenario's (`system:serviceaccount:keda:keda-operator` unless it tests
    // another): the chart's operator service account has that name, as on AKS.
    let tenant = crate::azure_postgres::scenario_tenant(
        s,
        &registered,
        "keda-operator",
        KIND_SERVICE_ACCOUNT_ISSUER,
    );
    let doc = serde_json::json!({
        "tenants": [tenant],
        "trusted_issuers": [kind_trusted_issuer()],
    });
    let entra = mock_aad::EntraConfig::from_str_named(
        &serde_json::to_string(&doc)?,
        &format!("{} (kind plan)", s.dir.display()),
    )?;
    let pg = &s.trigger.postgres;
    Ok(KindSettings {
        cluster_name: cluster_name(&cell.label),
        node_image: None,
        kind_config: None,
        keda_manifests: None,
        extra_images: Vec::new(),
        keda_chart_version: cell.entry.helm_chart.clone(),
        identity,
        ca_pem: RUN_TIME_PEM.into(),
        mock_aad: MockAadInCluster::new(
            entra.to_yaml(),
            TlsPair {
                cert_pem: RUN_TIME_PEM.into(),
                key_pem: RUN_TIME_PEM.into(),
                ca_pem: RUN_TIME_PEM.into(),
            },
            &pg.host,
            UPSTREAM_PLACEHOLDER,
        )
        .with_role_binding(crate::azure_postgres::role_binding(s, &registered))
        .with_secure_transport_required(s.file.postgres.require_tls),
    })
}

/// The kind backend's plan for `cells`.
pub fn plan(cells: &[CellSpec<'_>]) -> anyhow::Result<BackendPlan> {
    let mut out = BackendPlan::new("kind");
    out.shared.push(PlanStep::new(
        "tools",
        "docker, kind, kubectl and helm on PATH; Docker answering",
    ));
    let postgres = crate::postgres::container::ContainerPostgresConfig::default();
    out.shared.push(PlanStep::new(
        "images",
        format!(
            "mock-aad {} ({}; build it with `bash ci/images/mock-aad.sh`)\nPostgreSQL {} ({}; offline: `bash \
             ci/images/postgres.sh` and {}={})\nkind node: the kind release's default unless kind-config names one; \
             KEDA: the chart's images at its version",
            super::mock_aad::image(),
            super::mock_aad::IMAGE_ENV,
            postgres.image(),
            crate::postgres::container::IMAGE_ENV,
            crate::postgres::container::IMAGE_ENV,
            crate::postgres::container::OFFLINE_IMAGE,
        ),
    ));
    for cell in cells {
        let settings = settings_for(cell)?;
        let plan = KindPlan::render(&settings)?;
        let mut steps = vec![PlanStep::new(
            "PostgreSQL",
            format!(
                "a container on the `{}` Docker network; its address there becomes the front's upstream",
                super::KIND_DOCKER_NETWORK
            ),
        )];
        for command in plan.commands()? {
            steps.push(PlanStep::new("run", command.to_string()));
        }
        steps.push(PlanStep::new("objects", plan.objects_yaml()?));
        steps.push(PlanStep::new(
            format!("KEDA Helm values (chart {})", cell.entry.helm_chart),
            plan.keda.values_yaml()?,
        ));
        let (applied, _) = cell.scenario.manifests_to_apply();
        steps.push(PlanStep::new(
            "apply",
            format!(
                "the scenario's {} manifests (kubectl --context {} apply --server-side)",
                applied.len(),
                plan.cluster.kube_context()
            ),
        ));
        steps.push(PlanStep::new(
            "judge",
            crate::assertions::describe_expected(&cell.expectation, cell.scenario),
        ));
        steps.push(PlanStep::new(
            "cleanup",
            plan.teardown_command().to_string(),
        ));
        out.cells.push((cell.label.clone(), steps));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::cluster_name;

    #[test]
    fn cluster_names_are_dns_labels_of_the_cell() {
        assert_eq!(cluster_name("seed@2.15.0"), "kh-seed-2-15-0");
        assert_eq!(
            cluster_name("Customer's \"repro\"@2.21.0"),
            "kh-customer-s--repro--2-21-0"
        );
        assert!(cluster_name(&"x".repeat(100)).len() <= 40);
    }
}
