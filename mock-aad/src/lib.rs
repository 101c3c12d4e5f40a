//! mock-aad: Microsoft Entra ID and the Azure Database for PostgreSQL Entra-auth front, offline.
//!
//! - [`ca`]: the run's certificate authority and server certificates.
//! - [`config`]: tenants, apps, federated identity credentials, trusted issuers, faults ([`EntraConfig`]).
//! - [`server`]: [`EntraMock`], the HTTPS Entra endpoints (hyper over rustls, one task per connection).
//! - [`token`]: what the token endpoint checks and the access tokens it mints.
//! - [`assertion`]: a test issuer of client assertions and the example configuration.
//! - [`pg_front`]: [`pg_front::PgEntraFront`], Azure Database for PostgreSQL's Entra-token login in front of a real server.
//! - [`oidc_host`]: [`oidc_host::OidcIssuerHost`], a service-account issuer's discovery document and JWKS on
//!   a host of their own, as Azure serves an AKS cluster's OIDC issuer.
//! - [`faults`], [`journal`], [`entra_error`], [`issuers`], [`keys`]: the parts they share.

pub mod assertion;
pub mod ca;
pub mod config;
pub mod entra_error;
pub mod faults;
pub mod issuers;
pub mod journal;
pub mod keys;
pub mod oidc_host;
pub mod pg_front;
pub mod server;
pub mod token;

pub use assertion::{example_config, AssertionSpec, TestIssuer};
pub use config::EntraConfig;
pub use faults::{Fault, FaultEndpoint, FaultKind};
pub use journal::{JournalEntry, Outcome};
pub use server::{AccessTokenRules, EntraMock, EntraMockBuilder, MockError};
