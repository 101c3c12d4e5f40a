//! Where KEDA runs: `local` (processes on this machine) and `kind` (a kind cluster).
//!
//! - [`local`]: no Docker; a real kube-apiserver + etcd, the KEDA operator built from its Go module, and
//!   PostgreSQL from the machine's binaries behind the Entra front — processes on loopback.
//! - [`kind`]: a kind cluster, KEDA from its official Helm chart, mock-aad and the Entra front in the cluster,
//!   PostgreSQL in a container on the kind network. Needs Docker, kind, helm and a registry: networked
//!   machines only. Everything it applies is rendered as data first, so it is reviewed and tested here.

pub mod kind;
pub mod local;
