//! Shared helpers of the integration tests (see the `[[test]]` targets in Cargo.toml).

pub mod scenario_cell;
