#!/usr/bin/env bash
# The nightly matrix: every scenario of the library (or those named in $SCENARIOS, comma-separated) on every KEDA
# version in the catalog (or $KEDA_VERSIONS), on $BACKEND (local, the default, or kind), reports in $REPORT_DIR
# (default target/nightly); in
# GitHub Actions the verdict table (summary.md) goes to the job summary. Exit status 0 only if every expectation
# holds. Run `bash ci/prepare.sh` first on a fresh machine.
# `bash ci/nightly.sh --versions-json` prints the catalog's versions as a JSON list (the nightly workflow's matrix)
# and runs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
report_dir=${REPORT_DIR:-target/nightly}
cargo build --release -q -p keda-harness
bin=target/release/keda-harness
scenarios=${SCENARIOS:-$("$bin" scenarios --names)}
backend=${BACKEND:-local}
# The versions, oldest first, from `keda-harness catalog --json` (so a new catalog entry joins the nightly).
catalog_versions() {
  "$bin" catalog --json | python3 -c 'import json,sys; print(json.dumps([v["version"] for v in json.load(sys.stdin)["versions"]]))'
}
if [ "${1:-}" = "--versions-json" ]; then
  catalog_versions
  exit 0
fi
versions=${KEDA_VERSIONS:-$(catalog_versions | python3 -c 'import json,sys; print(",".join(json.load(sys.stdin)))')}
echo "nightly: backend=$backend scenarios=$scenarios versions=$versions report_dir=$report_dir"
# Side by side would run a control plane per version on 2 cores; one after another keeps each verdict's timing honest.
status=0
"$bin" matrix --backend "$backend" --keda "$versions" --scenario "$scenarios" --sequential --report-dir "$report_dir" \
  || status=$?
if [ -n "${GITHUB_STEP_SUMMARY:-}" ] && [ -f "$report_dir/summary.md" ]; then
  cat "$report_dir/summary.md" >> "$GITHUB_STEP_SUMMARY"
fi
exit "$status"
