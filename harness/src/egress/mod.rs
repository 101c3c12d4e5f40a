//! Egress redirection: how the processes the harness starts reach the mocks instead of Azure.
//!
//! Real Azure clients cannot simply be pointed at a mock: they refuse `http://` authorities, and MSAL-go (what
//! KEDA uses) runs instance discovery against `login.microsoftonline.com` for any host it does not trust. So
//! `login.microsoftonline.com` itself has to reach mock-aad, which presents a certificate from the run's CA.
//! Two mechanisms, both verified with KEDA's pinned Go clients (tests/entra_conformance_go.rs):
//!
//! - [`EgressProxy`]: an HTTP CONNECT proxy on loopback with a route table (`host:port` → local address).
//!   Processes get `HTTPS_PROXY`; every destination that is not routed is refused with 403 and recorded in the
//!   [`EgressJournal`], so nothing ever leaves for a real tenant. Clients that honour proxy variables (Go's
//!   net/http, Python requests, Rust reqwest) are covered without touching their configuration. Go never
//!   proxies loopback addresses, so the apiserver on 127.0.0.1 is unaffected.
//! - [`PrivateHosts`]: runs a command in its own mount namespace with a private `/etc/hosts` that maps given
//!   names to loopback IPs. For clients that dial directly (pgx to `*.postgres.database.azure.com:5432` does
//!   not use the proxy), and as a proxy-free alternative for HTTPS hosts.
//!
//! - [`SealedNetwork`]: a network namespace with only `lo` and no route, where the harness listens on exactly
//!   the addresses it serves (apiserver, proxy, Entra front) and relays them out. With
//!   [`EgressPlanBuilder::sealed`] the process runs inside it, with a resolver that fails for every name not
//!   in the private hosts file and an environment that is an allow-list.
//!
//! [`EgressPlan`] combines them and yields the environment and command wrapper for one process.

mod hosts;
mod netns;
mod plan;
mod proxy;

pub use hosts::{probe_unshare, PrivateHosts, UnshareMode};
pub use netns::SealedNetwork;
pub use plan::{EgressPlan, EgressPlanBuilder};
pub use proxy::{EgressJournal, EgressProxy, EgressProxyBuilder, EgressRecord, EgressVerdict};

use std::path::PathBuf;

/// What can go wrong while setting up egress redirection.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("egress proxy: cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "egress route `{route}` is not `host:port` (for example `login.microsoftonline.com:443`)"
    )]
    BadRoute { route: String },
    #[error("CA file {path}: {source} (pass the PEM file the run's CA was written to)")]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("private /etc/hosts: `{name}` is not a valid host name")]
    BadHostName { name: String },
    #[error("private /etc/hosts: cannot write {path}: {source}")]
    WriteHosts {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "private /etc/hosts needs a mount namespace, but `unshare --mount` is not permitted here ({detail}). \
         Fix: run as root (or with CAP_SYS_ADMIN), or enable unprivileged user namespaces \
         (sysctl kernel.unprivileged_userns_clone=1) so `unshare --user --map-root-user --mount` works; \
         or route the host through the EgressProxy instead"
    )]
    UnshareNotPermitted { detail: String },
    #[error(
        "the sealed network namespace (the operator may reach nothing but what the harness serves) cannot be \
         made here: unshare(CLONE_NEWNET): {source}. Fix: run as root (or with CAP_SYS_ADMIN), as \
         `bash ci/prepare.sh` expects"
    )]
    NetnsNotPermitted { source: std::io::Error },
    #[error("sealed network namespace: {what}: {source}")]
    Netns {
        what: String,
        source: std::io::Error,
    },
}
