//! keda-harness: reproduces KEDA + Azure Workload Identity + PostgreSQL behaviour without an Azure tenant.
//!
//! Where things live:
//! - `prereq`: how a tier that needs Go / PostgreSQL / dockerd skips on a bare machine (and fails in CI).

pub mod prereq;
pub mod process;
