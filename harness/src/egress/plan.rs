//! One plan for a process: the proxy routes, the private host names, the CA to trust — as env + wrapper.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{EgressError, EgressJournal, EgressProxy, PrivateHosts};

/// Loopback names that never go through the proxy (Go skips loopback on its own; Python and Rust need telling).
const LOOPBACK: [&str; 3] = ["127.0.0.1", "localhost", "::1"];

/// Collects routes, private host names and the CA file, then [`start`](Self::start)s the plan.
#[derive(Debug, Default)]
pub struct EgressPlanBuilder {
    routes: Vec<(String, SocketAddr)>,
    private_hosts: Vec<(String, IpAddr)>,
    no_proxy: Vec<String>,
    ca_file: Option<PathBuf>,
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

    /// Starts the proxy (always: refusing and logging every unrouted destination is its job even with no
    /// routes) and prepares the private hosts file when any name was given.
    pub async fn start(self) -> Result<EgressPlan, EgressError> {
        let mut proxy = EgressProxy::builder();
        for (host_port, to) in &self.routes {
            proxy = proxy.route(host_port, *to)?;
        }
        let hosts = if self.private_hosts.is_empty() {
            None
        } else {
            Some(PrivateHosts::new(self.private_hosts.clone())?)
        };
        let mut no_proxy: Vec<String> = LOOPBACK.iter().map(|s| s.to_string()).collect();
        no_proxy.extend(self.private_hosts.iter().map(|(n, _)| n.clone()));
        no_proxy.extend(self.no_proxy);
        Ok(EgressPlan {
            proxy: proxy.start().await?,
            hosts,
            no_proxy,
            ca_file: self.ca_file,
        })
    }
}

/// A running egress setup for processes the harness starts. Keep it alive as long as they run.
#[derive(Debug)]
pub struct EgressPlan {
    proxy: EgressProxy,
    hosts: Option<PrivateHosts>,
    no_proxy: Vec<String>,
    ca_file: Option<PathBuf>,
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

    /// The environment for a process: proxy variables in both spellings (Go reads either, Python prefers lower
    /// case), `NO_PROXY` for loopback and private names, and the CA variables when a CA file was given.
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
        env
    }

    /// `cmd` with [`env`](Self::env) applied and, when private host names were given, wrapped to run with
    /// the private `/etc/hosts`. Set stdio on the result.
    pub fn command(&self, mut cmd: Command) -> Command {
        // ALL_PROXY would win over HTTPS_PROXY in some clients and point somewhere we do not control.
        cmd.env_remove("ALL_PROXY").env_remove("all_proxy");
        cmd.envs(self.env());
        match &self.hosts {
            Some(h) => h.wrap(&cmd),
            None => cmd,
        }
    }
}
