//! Prerequisite gates for test tiers.
//!
//! A tier that needs an outside tool (Go, PostgreSQL server binaries, dockerd, kind) calls [`require`].
//! On a bare machine the test prints one line saying what is missing and returns early; with
//! `KEDA_HARNESS_REQUIRE=all` (set by `.ci/run`) a missing prerequisite fails the test instead, so a skip
//! can never pass silently in CI. `KEDA_HARNESS_REQUIRE` may also name tiers: `go,postgres`.

use std::fmt;

/// A test tier with outside prerequisites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The Go toolchain (KEDA builds, Go conformance clients).
    Go,
    /// PostgreSQL server binaries (initdb, postgres).
    Postgres,
    /// A reachable Docker daemon.
    Docker,
    /// kind and a registry (networked machines only).
    Kind,
    /// Python with the Azure / PostgreSQL client packages.
    Python,
    /// Debian's docker-registry (a local OCI registry on loopback for the image-source tests).
    Registry,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Go => "go",
            Tier::Postgres => "postgres",
            Tier::Docker => "docker",
            Tier::Kind => "kind",
            Tier::Python => "python",
            Tier::Registry => "registry",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// True when `KEDA_HARNESS_REQUIRE` makes `tier` mandatory.
pub fn is_required(tier: Tier) -> bool {
    match std::env::var("KEDA_HARNESS_REQUIRE") {
        Ok(v) => v
            .split(',')
            .map(str::trim)
            .any(|t| t == "all" || t == tier.name()),
        Err(_) => false,
    }
}

/// Gate a test on a prerequisite check.
///
/// `check` returns `Err(reason)` when the prerequisite is missing; the reason should say what to install.
/// Returns `true` when the test may go on. Returns `false` (after printing a one-line skip reason) on a bare
/// machine, and panics when the tier is required.
pub fn require(tier: Tier, check: impl FnOnce() -> Result<(), String>) -> bool {
    // A gated test runs slow steps (Go builds, stand-ups): show their progress as the CLI would, in plain lines.
    crate::progress::show_in_tests();
    match check() {
        Ok(()) => true,
        Err(reason) if is_required(tier) => {
            panic!("required tier `{tier}` is missing (KEDA_HARNESS_REQUIRE): {reason}")
        }
        Err(reason) => {
            eprintln!(
                "SKIPPED [{tier}]: {reason} (set KEDA_HARNESS_REQUIRE={tier} to fail instead)"
            );
            false
        }
    }
}

/// Gate a test that runs the local backend (KEDA and the control plane built from Go modules, PostgreSQL from
/// the machine's server binaries): [`require`] on both tiers.
pub fn require_local_backend() -> bool {
    require(Tier::Go, || {
        on_path(
            "go",
            "install Go >= 1.26 (KEDA and kube-apiserver are built from Go modules)",
        )
    }) && require(
        Tier::Postgres,
        crate::postgres::local::server_binaries_available,
    )
}

/// `Ok` when `program` is found on PATH (or is an existing path), else a reason naming the fix.
pub fn on_path(program: &str, install_hint: &str) -> Result<(), String> {
    if which(program).is_some() {
        Ok(())
    } else {
        Err(format!("`{program}` not found on PATH; {install_hint}"))
    }
}

/// Locate an executable on PATH.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(program);
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|c| c.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_reason_names_the_fix() {
        let r = on_path("surely-not-a-real-tool-xyz", "apt-get install xyz").unwrap_err();
        assert!(r.contains("surely-not-a-real-tool-xyz"));
        assert!(r.contains("apt-get install xyz"));
    }

    #[test]
    fn finds_a_tool_that_exists() {
        assert!(which("sh").is_some());
    }
}
