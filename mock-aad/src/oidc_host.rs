//! An OIDC issuer host: one service-account issuer's discovery document and JWKS, served under the issuer's
//! own host and path, the way Azure publishes an AKS cluster's OIDC issuer
//! (`https://REGION.oic.prod-aks.azure.com/TENANT/GUID/`): the documents come from the cluster's apiserver,
//! the host is not the apiserver. Entra fetches `{issuer}/.well-known/openid-configuration` and then its
//! `jwks_uri` from here when it checks a federated assertion.
//!
//! Only those two paths answer (GET, 200, JSON); anything else is a 404. The documents are fixed when the
//! host starts: a cluster's signing key does not change during a run.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::Method;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Bound on a client's TLS handshake and request head, as on the Entra mock.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum OidcHostError {
    #[error("issuer `{0}` is not an https URL with a host")]
    BadIssuer(String),
    #[error("the discovery document names issuer `{found}`, not `{wanted}`: it is not this issuer's document")]
    IssuerMismatch { wanted: String, found: String },
    #[error("the discovery document's `jwks_uri` `{0}` is not an https URL on the issuer's host")]
    BadJwksUri(String),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running issuer host; stops when dropped.
pub struct OidcIssuerHost {
    addr: SocketAddr,
    issuer: String,
    host: String,
    requests: Arc<Mutex<Vec<String>>>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Documents {
    discovery_path: String,
    jwks_path: String,
    discovery: Bytes,
    jwks: Bytes,
}

impl OidcIssuerHost {
    /// Serve `discovery` (whose `issuer` must be `issuer`) and `jwks` (at the discovery document's `jwks_uri`,
    /// which must be on the issuer's host) on `listen` with `tls` (a certificate for the issuer's host).
    pub async fn start(
        issuer: &str,
        discovery: serde_json::Value,
        jwks: serde_json::Value,
        listen: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
    ) -> Result<Self, OidcHostError> {
        let url = reqwest::Url::parse(issuer)
            .ok()
            .filter(|u| u.scheme() == "https" && u.host_str().is_some())
            .ok_or_else(|| OidcHostError::BadIssuer(issuer.to_string()))?;
        let host = url.host_str().unwrap_or_default().to_string();
        let found = discovery["issuer"].as_str().unwrap_or_default();
        if found != issuer {
            return Err(OidcHostError::IssuerMismatch {
                wanted: issuer.to_string(),
                found: found.to_string(),
            });
        }
        let jwks_uri = discovery["jwks_uri"].as_str().unwrap_or_default();
        let jwks_url = reqwest::Url::parse(jwks_uri)
            .ok()
            .filter(|u| u.scheme() == "https" && u.host_str() == Some(host.as_str()))
            .ok_or_else(|| OidcHostError::BadJwksUri(jwks_uri.to_string()))?;
        let docs = Arc::new(Documents {
            // `{issuer}/.well-known/...` with the issuer's trailing slash dropped, as Entra and OIDC clients build it.
            discovery_path: format!(
                "{}/.well-known/openid-configuration",
                url.path().trim_end_matches('/')
            ),
            jwks_path: jwks_url.path().to_string(),
            discovery: Bytes::from(discovery.to_string()),
            jwks: Bytes::from(jwks.to_string()),
        });
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| OidcHostError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| OidcHostError::Bind {
                addr: listen,
                source,
            })?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(
            listener,
            tokio_rustls::TlsAcceptor::from(tls),
            docs,
            requests.clone(),
            rx,
        ));
        tracing::info!(%issuer, %addr, "OIDC issuer host ready");
        Ok(Self {
            addr,
            issuer: issuer.to_string(),
            host,
            requests,
            shutdown,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The issuer's host name (what a certificate and a host mapping name).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `METHOD path -> status` of every request answered, oldest first.
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for OidcIssuerHost {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    docs: Arc<Documents>,
    requests: Arc<Mutex<Vec<String>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let Ok((tcp, peer)) = accepted else {
                    // Out of descriptors and the like: wait a moment instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let acceptor = acceptor.clone();
                let docs = docs.clone();
                let requests = requests.clone();
                conns.spawn(async move {
                    let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
                        tracing::debug!(%peer, "OIDC issuer host: TLS handshake failed or timed out");
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let docs = docs.clone();
                        let requests = requests.clone();
                        async move { Ok::<_, Infallible>(answer(&docs, &requests, req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
}

fn answer(
    docs: &Documents,
    requests: &Mutex<Vec<String>>,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let path = req.uri().path();
    let body = match (req.method(), path) {
        (&Method::GET, p) if p == docs.discovery_path => Some(docs.discovery.clone()),
        (&Method::GET, p) if p == docs.jwks_path => Some(docs.jwks.clone()),
        _ => None,
    };
    let status = if body.is_some() { 200 } else { 404 };
    requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(format!("{} {path} -> {status}", req.method()));
    let mut response = hyper::Response::new(Full::new(
        body.unwrap_or_else(|| Bytes::from_static(b"{\"error\":\"not found\"}")),
    ));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::TestCa;

    const ISSUER: &str = "https://eastus.oic.prod-aks.azure.com/9b2c4f3e-7a1d-4e8b-b6c5-2f0e1d3a4c5b/0d1c3e5f-2a4b-4c6d-8e0f-1a2b3c4d5e6f/";

    fn discovery() -> serde_json::Value {
        serde_json::json!({
            "issuer": ISSUER,
            "jwks_uri": format!("{ISSUER}openid/v1/jwks"),
            "response_types_supported": ["id_token"],
        })
    }

    #[tokio::test]
    async fn serves_both_documents_under_the_issuer_path_and_entra_style_discovery_finds_the_keys()
    {
        let ca = TestCa::generate("oidc host test").unwrap();
        let cert = ca.issue_server(&["eastus.oic.prod-aks.azure.com"]).unwrap();
        let jwks = crate::keys::RsaSigningKey::entra_test_key().jwks();
        let host = OidcIssuerHost::start(
            ISSUER,
            discovery(),
            jwks.clone(),
            "127.0.0.1:0".parse().unwrap(),
            cert.rustls_server_config().unwrap(),
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        ca.write_ca_file(&ca_file).unwrap();
        // What the Entra mock does for a `discovery: true` issuer mapped to this host.
        let issuer = crate::config::TrustedIssuer {
            issuer: ISSUER.into(),
            discovery: true,
            ca_file: Some(ca_file),
            connect_to: Some(host.addr()),
            ..Default::default()
        };
        let set = crate::issuers::fetch_discovery_jwks(&issuer).await.unwrap();
        assert_eq!(set.keys.len(), jwks["keys"].as_array().unwrap().len());
        let path = "/9b2c4f3e-7a1d-4e8b-b6c5-2f0e1d3a4c5b/0d1c3e5f-2a4b-4c6d-8e0f-1a2b3c4d5e6f";
        assert_eq!(
            host.requests(),
            vec![
                format!("GET {path}/.well-known/openid-configuration -> 200"),
                format!("GET {path}/openid/v1/jwks -> 200"),
            ]
        );
    }

    #[tokio::test]
    async fn refuses_another_issuers_document() {
        let ca = TestCa::generate("oidc host test").unwrap();
        let cert = ca.issue_server(&["eastus.oic.prod-aks.azure.com"]).unwrap();
        let mut doc = discovery();
        doc["issuer"] = "https://127.0.0.1:6443".into();
        let err = OidcIssuerHost::start(
            ISSUER,
            doc,
            serde_json::json!({"keys": []}),
            "127.0.0.1:0".parse().unwrap(),
            cert.rustls_server_config().unwrap(),
        )
        .await
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("https://127.0.0.1:6443"), "{err}");
    }
}
