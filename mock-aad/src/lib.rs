//! mock-aad: Microsoft Entra ID and the Azure Database for PostgreSQL Entra-auth front, offline.
//!
//! - [`ca`]: the run's certificate authority and server certificates.

pub mod ca;
pub mod pg_front;
