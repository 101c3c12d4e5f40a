//! Where KEDA runs (DESIGN.md, "Backends").
//!
//! - [`kind`]: a kind cluster, KEDA from its official Helm chart, mock-aad and the Entra front in the cluster,
//!   PostgreSQL in a container on the kind network. Needs Docker, kind, helm and a registry: networked
//!   machines only. Everything it applies is rendered as data first, so it is reviewed and tested here.

pub mod kind;
