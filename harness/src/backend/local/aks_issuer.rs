//! The Azure-side pieces of a local world besides Entra and the database: the cluster's OIDC issuer on an
//! AKS-shaped host, and a scenario's Entra outage.
//!
//! On AKS the service-account issuer is the cluster's OIDC issuer URL,
//! `https://REGION.oic.prod-aks.azure.com/TENANT_ID/GUID/` (learn.microsoft.com/azure/aks/use-oidc-issuer:
//! `az aks show --query "oidcIssuerProfile.issuerUrl"` prints that shape), and Azure serves the apiserver's
//! discovery document and JWKS under it. The local apiserver issues tokens with such an issuer (a fresh GUID per
//! run, the scenario's tenant), and an [`OidcIssuerHost`] serves the apiserver's own documents for that host on
//! a loopback address of the run, so Entra's texts that quote `Assertion Issuer: '...'` read as on AKS.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use mock_aad::ca::TestCa;
use mock_aad::oidc_host::OidcIssuerHost;
use mock_aad::{EntraMock, Fault};

use crate::control_plane::LocalControlPlane;
use crate::scenario::{ManifestChange, Outage};

/// The region in the issuer's host name (any AKS region has the same shape).
pub const AKS_OIDC_REGION: &str = "eastus";

/// A fresh AKS-shaped issuer URL of `tenant_id`, trailing slash included as AKS prints it.
pub fn issuer_url(tenant_id: &str) -> String {
    format!(
        "https://{AKS_OIDC_REGION}.oic.prod-aks.azure.com/{}/{}/",
        tenant_id.to_ascii_lowercase(),
        uuid::Uuid::new_v4()
    )
}

/// Serve the apiserver's discovery document and JWKS for its (AKS-shaped) issuer's host, on `ip` (any port),
/// with a certificate of the run's CA for that host. The documents are read from the apiserver.
pub async fn start_host(
    control_plane: &LocalControlPlane,
    ca: &TestCa,
    ip: IpAddr,
) -> anyhow::Result<OidcIssuerHost> {
    // As the admin user: what AKS publishes is the apiserver's own documents, and the anonymous binding
    // for discovery may not have reached the authorizer's cache yet.
    let client = control_plane.client();
    let get = |path: &'static str| {
        let client = client.clone();
        async move {
            let req = http::Request::get(path)
                .body(Vec::new())
                .with_context(|| format!("GET {path}"))?;
            let text = client
                .request_text(req)
                .await
                .with_context(|| format!("GET {path} from the apiserver"))?;
            serde_json::from_str::<serde_json::Value>(&text)
                .with_context(|| format!("GET {path}: not JSON"))
        }
    };
    let discovery = get("/.well-known/openid-configuration").await?;
    let jwks = get("/openid/v1/jwks").await?;
    let issuer = control_plane.issuer_url();
    let host = reqwest::Url::parse(issuer)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .ok_or_else(|| anyhow!("the issuer {issuer} has no host"))?;
    let tls = ca.issue_server(&[&host])?.rustls_server_config()?;
    OidcIssuerHost::start(issuer, discovery, jwks, SocketAddr::new(ip, 0), tls)
        .await
        .context("serving the apiserver's issuer documents for the AKS-shaped issuer host")
}

/// The report's line for the issuer: the apiserver's flag, from its own URL to the AKS shape.
pub fn world_change(server_url: &str, issuer: &str) -> ManifestChange {
    ManifestChange {
        object: "kube-apiserver".into(),
        field: "--service-account-issuer".into(),
        from: format!("{server_url} (its own URL)"),
        to: issuer.to_string(),
        why: "the shape of an AKS cluster's OIDC issuer URL, so Entra's texts that quote the issuer read as on \
              AKS; the apiserver's discovery document and JWKS are served for that host"
            .into(),
    }
}

/// The token endpoint answers 503 from `after_seconds` to `after_seconds + for_seconds` after `applied_at`,
/// through the mock's fault table (cleared at the end; the scenario adds no other faults).
pub fn spawn_outage(
    entra: Arc<EntraMock>,
    applied_at: Instant,
    outage: Outage,
) -> tokio::task::JoinHandle<()> {
    let start = applied_at + Duration::from_secs(outage.after_seconds);
    let end = start + Duration::from_secs(outage.for_seconds);
    tokio::spawn(async move {
        tokio::time::sleep_until(start.into()).await;
        tracing::info!("Entra outage: the token endpoint answers 503");
        entra.inject_fault(Fault::unavailable());
        tokio::time::sleep_until(end.into()).await;
        entra.clear_faults();
        tracing::info!("Entra outage over");
    })
}
