#!/usr/bin/env bash
# The nightly matrix: the seed scenario (and any scenario named in $SCENARIOS) on every KEDA version in the
# catalog, local backend, reports in $REPORT_DIR (default target/nightly). Exit status 0 only if every
# expectation holds. Run `bash ci/prepare.sh` first on a fresh machine.
# `bash ci/nightly.sh --versions-json` prints the catalog's versions as a JSON list (the nightly workflow's matrix)
# and runs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
report_dir=${REPORT_DIR:-target/nightly}
scenarios=${SCENARIOS:-seed}
cargo build --release -q -p keda-harness
bin=target/release/keda-harness
# The versions, oldest first, from `keda-harness catalog --json` (so a new catalog entry joins the nightly).
catalog_versions() {
  "$bin" catalog --json | python3 -c 'import json,sys; print(json.dumps([v["version"] for v in json.load(sys.stdin)["versions"]]))'
}
if [ "${1:-}" = "--versions-json" ]; then
  catalog_versions
  exit 0
fi
versions=${KEDA_VERSIONS:-$(catalog_versions | python3 -c 'import json,sys; print(",".join(json.load(sys.stdin)))')}
echo "nightly: scenarios=$scenarios versions=$versions report_dir=$report_dir"
# Side by side would run a control plane per version on 2 cores; one after another keeps each verdict's timing honest.
exec "$bin" matrix --keda "$versions" --scenario "$scenarios" --sequential --report-dir "$report_dir"
