#!/usr/bin/env bash
# The nightly matrix: the seed scenario (and any scenario named in $SCENARIOS) on every KEDA version in the
# catalog, local backend, reports in $REPORT_DIR (default target/nightly). Exit status 0 only if every
# expectation holds. Run `bash ci/prepare.sh` first on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
report_dir=${REPORT_DIR:-target/nightly}
scenarios=${SCENARIOS:-seed}
cargo build --release -q -p keda-harness
bin=target/release/keda-harness
versions=${KEDA_VERSIONS:-$("$bin" catalog --json | python3 -c 'import json,sys; print(",".join(v["version"] for v in json.load(sys.stdin)["versions"]))')}
echo "nightly: scenarios=$scenarios versions=$versions report_dir=$report_dir"
# Side by side would run 8 control planes on 2 cores; one after another keeps each verdict's timing honest.
exec "$bin" matrix --keda "$versions" --scenario "$scenarios" --sequential --report-dir "$report_dir"
