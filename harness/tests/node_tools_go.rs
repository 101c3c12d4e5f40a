//! The Go programs of harness/go/node-tools (keda-harness-runc, the pause program) pass their own Go tests:
//! `go test ./...` in that module, so `cargo test` covers the runc front that dockerd and the kind node run
//! every container through on this project's machines.
//!
//! Gate: Tier::Go (`go` on PATH). The module has no dependencies: nothing is downloaded.

use std::process::Command;

use keda_harness::backend::kind::cluster::repo_root;
use keda_harness::prereq::{on_path, require, Tier};

#[test]
fn the_node_tools_pass_their_go_tests() {
    if !require(Tier::Go, || {
        on_path("go", "install Go >= 1.26 (harness/go/node-tools)")
    }) {
        return;
    }
    let out = Command::new("go")
        .args(["test", "-count=1", "./..."])
        .current_dir(repo_root().join("harness/go/node-tools"))
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .output()
        .expect("go runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "go test ./... in harness/go/node-tools failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A package without tests prints `?`; the runc front's must have run.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("cmd/runc-wrapper")),
        "{stdout}"
    );
}
