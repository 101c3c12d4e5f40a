#!/usr/bin/env bash
# Soak: ROUNDS consecutive seed matrices (KEDA 2.14.1, 2.15.0 and the newest catalog version, side by side) with
# Ctrl-C (SIGINT) sent to INTERRUPTS of them at a random moment. Reports per round: outcome, wall time and
# leftovers (temp dirs, run-state files, processes); at the end: flakes, leftovers and wall time min/median/max.
# Exit status 0 only with no flake and no leftover.
#
#   bash ci/soak.sh [ROUNDS=20] [INTERRUPTS=5]
#
# Each round runs in a sandbox (its own TMPDIR and KEDA_HARNESS_STATE_DIR), so "left behind" is exact. The first
# round may build KEDA and the control plane (minutes); later rounds reuse target/keda-harness/.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-20}
interrupts=${2:-5}
[ "$interrupts" -le "$rounds" ] || { echo "soak: INTERRUPTS ($interrupts) > ROUNDS ($rounds)" >&2; exit 2; }

echo "soak: building the release CLI"
cargo build --release -q -p keda-harness
bin=$PWD/target/release/keda-harness
# Build everything once before timing anything (a plain matrix run, not counted).
echo "soak: warm-up matrix (builds KEDA and the control plane when not cached)"
"$bin" matrix >/dev/null 2>&1 || { echo "soak: the warm-up matrix failed; run \`$bin matrix\` to see why" >&2; exit 1; }

mapfile -t interrupted < <(shuf -i 1-"$rounds" -n "$interrupts" | sort -n)
is_interrupted() { local r; for r in "${interrupted[@]}"; do [ "$r" = "$1" ] && return 0; done; return 1; }

work=$(mktemp -d /tmp/keda-harness-soak-XXXXXX)
trap 'rm -rf "$work"' EXIT
# What a failed round leaves to look at (its output and the diagnostics bundle the harness kept): kept here.
kept=$PWD/target/soak
rm -rf "$kept"; mkdir -p "$kept"
flakes=0 leftovers=0
times=()
printf '%-6s %-12s %-9s %-8s %s\n' round kind result seconds leftovers
for round in $(seq 1 "$rounds"); do
  box=$work/round-$round
  mkdir -p "$box/tmp" "$box/state"
  chmod 711 "$work" "$box" "$box/tmp"   # PostgreSQL runs unprivileged and must pass through
  log=$box/log
  start=$(date +%s.%N)
  TMPDIR=$box/tmp KEDA_HARNESS_STATE_DIR=$box/state "$bin" matrix >"$log" 2>&1 &
  pid=$!
  kind=full
  if is_interrupted "$round"; then
    # A random moment within a matrix's usual wall time (stand-up 5-10 s, verdicts after 20-40 s).
    delay=$(( (RANDOM % 35) + 1 ))
    kind="sigint@${delay}s"
    sleep "$delay"
    kill -INT "$pid" 2>/dev/null || true
  fi
  rc=0; wait "$pid" || rc=$?
  secs=$(echo "$(date +%s.%N) - $start" | bc)
  times+=("$secs")
  if [ "$kind" = full ]; then
    if [ "$rc" = 0 ]; then result=PASS; else result="FLAKE($rc)"; flakes=$((flakes + 1)); fi
  else
    # 130: stopped by the signal; 0: the matrix had already finished; anything else is a flake.
    case $rc in 130) result=stopped ;; 0) result=PASS ;; *) result="FLAKE($rc)"; flakes=$((flakes + 1)) ;; esac
  fi
  sleep 1
  # A failed verdict's diagnostics bundle is output the harness keeps on purpose (and prints), not a leftover.
  for d in "$box"/tmp/keda-harness-diagnostics-*; do
    [ -d "$d" ] && mkdir -p "$kept/round-$round" && mv "$d" "$kept/round-$round/"
  done
  left=$(ls -A "$box/tmp" "$box/state" 2>/dev/null | grep -v ':$' | grep -v '^$' | tr '\n' ' ' || true)
  procs=$(pgrep -af -- "$box/" | grep -v pgrep | cut -c1-80 | tr '\n' ';' || true)
  what="${left}${procs}"
  [ -n "$what" ] && leftovers=$((leftovers + 1))
  printf '%-6s %-12s %-9s %-8.1f %s\n' "$round" "$kind" "$result" "$secs" "${what:--}"
  if [ "${result#FLAKE}" != "$result" ]; then
    mkdir -p "$kept/round-$round" && cp "$log" "$kept/round-$round/output.log"
    echo "  --- last lines of round $round's output (all of it and the bundle: $kept/round-$round):"
    tail -n 25 "$log" | sed 's/^/  /'
  fi
  # Leave nothing of ours either: a leftover was counted above, now remove it for the next round.
  pkill -KILL -f -- "$box/" 2>/dev/null || true
  rm -rf "$box"
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
min=$(echo "$sorted" | head -n1); max=$(echo "$sorted" | tail -n1)
median=$(echo "$sorted" | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
echo
echo "soak: $rounds rounds ($interrupts with SIGINT at rounds ${interrupted[*]}): flakes $flakes, rounds with leftovers $leftovers"
printf 'soak: wall seconds per round: min %.1f, median %.1f, max %.1f\n' "$min" "$median" "$max"
[ "$flakes" = 0 ] && [ "$leftovers" = 0 ]
