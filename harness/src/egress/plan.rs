//! One plan for a process: the proxy routes, the private host names, the CA to trust — as env + wrapper.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{EgressError, EgressJournal, EgressProxy, PrivateHosts, SealedNetwork};
use crate::lifecycle::TrackedDir;

/// Loopback names that never go through the proxy (Go skips loopback on its own; Python and Rust need telling).
const LOOPBACK: [&str; 3] = ["127.0.0.1", "localhost", "::1"];

/// Collects routes, private host names and the CA file, then [`start`](Self::start)s the plan.
#[derive(Debug, Default)]
pub struct EgressPlanBuilder {
    routes: Vec<(String, SocketAddr)>,
    private_hosts: Vec<(String, IpAddr)>,
    no_proxy: Vec<String>,
    ca_file: Option<PathBuf>,
    sealed: bool,
    keep_environment: bool,
    exposed: Vec<SocketAddr>,
    /// A namespace made ahead of time (making one can take most of a second on some kernels).
    network: Option<SealedNetwork>,
}

impl EgressPlanBuilder {
    /// Tunnel HTTPS (CONNECT) to `host_port` to the local address `to`, e.g.
    /// `("login.microsoftonline.com:443", entra_mock.addr())`.
    pub fn route(mut self, host_port: &str, to: SocketAddr) -> Self {
        self.routes.push((host_port.to_string(), to));
        self
    }

    /// Resolve `name` to `ip` in the process's private `/etc/hosts` (for clients that dial directly, such as
    /// pgx to `*.postgres.database.azure.com`). The name is also put on `NO_PROXY`.
    pub fn private_host(mut self, name: &str, ip: IpAddr) -> Self {
        self.private_hosts.push((name.to_string(), ip));
        self
    }

    /// Never proxy this host (e.g. the apiserver's name when it is not a loopback address).
    pub fn no_proxy(mut self, host: &str) -> Self {
        self.no_proxy.push(host.to_string());
        self
    }

    /// The run CA's PEM file: the only roots the process trusts (`SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`).
    pub fn trust_ca_file(mut self, path: &Path) -> Self {
        self.ca_file = Some(path.to_path_buf());
        self
    }

    /// Run the process in a [`SealedNetwork`]: it reaches only the proxy and the addresses given to
    /// [`expose`](Self::expose); names resolve only through the private hosts file; its environment is only
    /// what its command sets plus this plan's variables (see [`PrivateHosts::sealed`]).
    pub fn sealed(mut self) -> Self {
        self.sealed = true;
        self
    }

    /// [`sealed`](Self::sealed), in a namespace the caller made ahead of time ([`SealedNetwork::new`], e.g. on a
    /// blocking thread while other servers start).
    pub fn sealed_in(mut self, network: SealedNetwork) -> Self {
        self.sealed = true;
        self.network = Some(network);
        self
    }

    /// With [`sealed`](Self::sealed): keep the process's inherited environment (for test clients that need
    /// their interpreter's variables); the network and the resolver stay sealed.
    pub fn keep_environment(mut self) -> Self {
        self.keep_environment = true;
        self
    }

    /// With [`sealed`](Self::sealed): make `addr` (a listener of the harness) reachable at the same address
    /// inside the namespace.
    pub fn expose(mut self, addr: SocketAddr) -> Self {
        self.exposed.push(addr);
        self
    }

    /// Starts the proxy (always: refusing and logging every unrouted destination is its job even with no
    /// routes) and prepares the private hosts file when any name was given (always when sealed: the resolver
    /// is replaced there too).
    pub async fn start(self) -> Result<EgressPlan, EgressError> {
        let mut proxy = EgressProxy::builder();
        for (host_port, to) in &self.routes {
            proxy = proxy.route(host_port, *to)?;
        }
        let hosts = if self.sealed {
            Some(PrivateHosts::new(self.private_hosts.clone())?.sealed(!self.keep_environment)?)
        } else if self.private_hosts.is_empty() {
            None
        } else {
            Some(PrivateHosts::new(self.private_hosts.clone())?)
        };
        let proxy = proxy.start().await?;
        let network = if self.sealed {
            let mut net = match self.network {
                Some(net) => net,
                None => SealedNetwork::new()?,
            };
            net.expose(proxy.addr()).await?;
            for addr in &self.exposed {
                net.expose(*addr).await?;
            }
            Some(net)
        } else {
            None
        };
        let mut no_proxy: Vec<String> = LOOPBACK.iter().map(|s| s.to_string()).collect();
        no_proxy.extend(self.private_hosts.iter().map(|(n, _)| n.clone()));
        no_proxy.extend(self.no_proxy);
        // Go reads the default certificate directories even when SSL_CERT_FILE is set; pointing SSL_CERT_DIR at a
        // directory holding only the run CA makes that CA the only trust anchor, as for Python and Rust.
        let ca_dir = match &self.ca_file {
            Some(ca) => Some(ca_only_dir(ca)?),
            None => None,
        };
        Ok(EgressPlan {
            proxy,
            network,
            hosts,
            no_proxy,
            ca_file: self.ca_file,
            ca_dir,
        })
    }
}

/// A running egress setup for processes the harness starts. Keep it alive as long as they run.
#[derive(Debug)]
pub struct EgressPlan {
    // Field order is drop order: the relays into the namespace stop before the proxy they lead to.
    network: Option<SealedNetwork>,
    proxy: EgressProxy,
    hosts: Option<PrivateHosts>,
    no_proxy: Vec<String>,
    ca_file: Option<PathBuf>,
    ca_dir: Option<TrackedDir>,
}

fn ca_only_dir(ca_file: &Path) -> Result<TrackedDir, EgressError> {
    let unreadable = |source| EgressError::CaFile {
        path: ca_file.to_path_buf(),
        source,
    };
    let pem = std::fs::read(ca_file).map_err(unreadable)?;
    let dir =
        TrackedDir::new("keda-harness-ca-").map_err(|e| unreadable(std::io::Error::other(e)))?;
    std::fs::write(dir.path().join("run-ca.pem"), pem).map_err(unreadable)?;
    Ok(dir)
}

impl EgressPlan {
    pub fn builder() -> EgressPlanBuilder {
        EgressPlanBuilder::default()
    }

    pub fn proxy(&self) -> &EgressProxy {
        &self.proxy
    }

    /// What the proxy routed and refused.
    pub fn journal(&self) -> EgressJournal {
        self.proxy.journal()
    }

    pub fn private_hosts(&self) -> Option<&PrivateHosts> {
        self.hosts.as_ref()
    }

    /// The sealed network namespace, when the plan was [`sealed`](EgressPlanBuilder::sealed).
    pub fn sealed_network(&self) -> Option<&SealedNetwork> {
        self.network.as_ref()
    }

    /// An address outside that leads to `inside` in the sealed namespace (for probes of a process in it);
    /// `inside` itself when the plan is not sealed.
    pub async fn reach_inside(&mut self, inside: SocketAddr) -> Result<SocketAddr, EgressError> {
        match self.network.as_mut() {
            Some(net) => net.reach_inside(inside).await,
            None => Ok(inside),
        }
    }

    /// The environment for a process: proxy variables in both spellings (Go reads either, Python prefers lower
    /// case), `NO_PROXY` for loopback and private names, and — when a CA file was given — the variables that make
    /// it the only trusted CA: `SSL_CERT_FILE` + `SSL_CERT_DIR` (Go, OpenSSL, rustls-native-certs) and
    /// `REQUESTS_CA_BUNDLE` (Python requests).
    pub fn env(&self) -> Vec<(String, String)> {
        let proxy = self.proxy.url();
        let no_proxy = self.no_proxy.join(",");
        let mut env = Vec::new();
        for k in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
            env.push((k.to_string(), proxy.clone()));
        }
        for k in ["NO_PROXY", "no_proxy"] {
            env.push((k.to_string(), no_proxy.clone()));
        }
        if let Some(ca) = &self.ca_file {
            let ca = ca.display().to_string();
            // Go and OpenSSL/rustls-native-certs read SSL_CERT_FILE; Python requests reads REQUESTS_CA_BUNDLE.
            env.push(("SSL_CERT_FILE".to_string(), ca.clone()));
            env.push(("REQUESTS_CA_BUNDLE".to_string(), ca));
        }
        if let Some(dir) = &self.ca_dir {
            env.push(("SSL_CERT_DIR".to_string(), dir.path().display().to_string()));
        }
        env
    }

    /// `cmd` with [`env`](Self::env) applied and, when private host names were given, wrapped to run with
    /// the private `/etc/hosts`. Set stdio on the result.
    pub fn command(&self, mut cmd: Command) -> Command {
        // ALL_PROXY would win over HTTPS_PROXY in some clients and point somewhere we do not control.
        cmd.env_remove("ALL_PROXY").env_remove("all_proxy");
        cmd.envs(self.env());
        let mut cmd = match &self.hosts {
            Some(h) => h.wrap(&cmd),
            None => cmd,
        };
        if let Some(net) = &self.network {
            net.enter(&mut cmd);
        }
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn env_points_proxies_at_the_proxy_and_trust_at_the_run_ca_only() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nrun CA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let plan = EgressPlan::builder()
            .no_proxy("apiserver.local")
            .trust_ca_file(&ca)
            .start()
            .await
            .unwrap();
        let env: std::collections::HashMap<_, _> = plan.env().into_iter().collect();
        assert_eq!(env["HTTPS_PROXY"], plan.proxy().url());
        assert_eq!(env["https_proxy"], plan.proxy().url());
        assert_eq!(env["NO_PROXY"], "127.0.0.1,localhost,::1,apiserver.local");
        assert_eq!(env["SSL_CERT_FILE"], ca.display().to_string());
        assert_eq!(env["REQUESTS_CA_BUNDLE"], ca.display().to_string());
        let cert_dir: Vec<_> = std::fs::read_dir(&env["SSL_CERT_DIR"])
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(cert_dir, vec!["run-ca.pem"]);
        assert_eq!(
            std::fs::read(Path::new(&env["SSL_CERT_DIR"]).join("run-ca.pem")).unwrap(),
            std::fs::read(&ca).unwrap()
        );
    }

    #[tokio::test]
    async fn a_missing_ca_file_is_named_in_the_error() {
        let err = EgressPlan::builder()
            .trust_ca_file(Path::new("/nonexistent/run-ca.pem"))
            .start()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/run-ca.pem"), "{err}");
    }
}
