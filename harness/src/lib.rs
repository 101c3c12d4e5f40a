//! keda-harness: reproduces KEDA + Azure Workload Identity + PostgreSQL behaviour without an Azure tenant.
//!
//! Where things live:
//! - `catalog`: the KEDA versions the harness can build and run (harness/catalog/keda-versions.yaml).
//! - `prereq`: how a tier that needs Go / PostgreSQL / dockerd skips on a bare machine (and fails in CI).

pub mod catalog;
pub mod prereq;
