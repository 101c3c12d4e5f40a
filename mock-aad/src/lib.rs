//! mock-aad: Microsoft Entra ID and the Azure Database for PostgreSQL Entra-auth front, offline.
