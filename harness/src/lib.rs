//! keda-harness: reproduces KEDA + Azure Workload Identity + PostgreSQL behaviour without an Azure tenant.
//!
//! Where things live:
//! - `backend`: where KEDA runs; `backend::kind` renders and drives a kind cluster with KEDA from its Helm chart.
//! - `catalog`: the KEDA versions the harness can build and run (harness/catalog/keda-versions.yaml).
//! - `keda`: a KEDA release built from its Go module, its CRDs, and how to run its operator locally.
//! - `gobuild`: the one `go build` pipeline (lock, recorded child, progress, log, error tail) of every Go build.
//! - `images`: release binaries out of OCI images (KEDA operator, kube-apiserver, etcd), digest-checked and cached.
//! - `egress`: how processes the harness starts reach the mocks instead of Azure (CONNECT proxy, private /etc/hosts).
//! - `scaled_object`: what KEDA decides for a ScaledObject (its HPA, activation, the external metric) and how
//!   it is judged.
//! - `scenario`: a scenario folder (scenario.yaml + manifests) loaded, validated and read for its trigger; the
//!   library under scenarios/.
//! - `assertions`: a scenario's expectation judged against what KEDA did; `observation`: what KEDA did, without
//!   an expectation (observe mode).
//! - `repro`: a customer's manifests as sent turned into a scenario, run per version, a fix hint; `bisect`.
//! - `progress`: progress of long steps as tracing events (library code never prints; the binary renders them).
//! - `prereq`: how a tier that needs Go / PostgreSQL / dockerd skips on a bare machine (and fails in CI).

pub mod assertions;
pub mod azure_postgres;
pub mod backend;
pub mod catalog;
pub mod control_plane;
pub mod egress;
pub mod env_up;
pub mod gobuild;
pub mod images;
pub mod keda;
pub mod lifecycle;
pub mod matrix;
pub mod observation;
pub mod observe;
pub mod postgres;
pub mod prereq;
pub mod process;
pub mod progress;
pub mod report;
pub mod repro;
pub mod scaled_object;
pub mod scenario;
