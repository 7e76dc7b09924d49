#!/usr/bin/env bash
# A/B of `--roll-up-priority`: POST /visit requests/s of footfall with routine roll-ups at idle
# priority and at normal priority, each against the no-op baseline in the same round.
#
#   scripts/roll-up-priority-ab.sh [ROUNDS] [SECONDS]      (from the project's root)
#
# Starts the no-op server and two footfalls of the same build on their own databases, then each
# round runs the wrk script of ../shared/bench/ingest.sh against noop, idle and normal in turn
# (odd rounds idle first, even rounds normal first, so neither always follows the noop run),
# with a second's pause after each footfall run for its roll-up to catch up. Prints one line per
# round and the mean requests/s of each.
#
# Needs: wrk, curl, a release build (cargo build --release), ../shared/bench/ingest.sh run once
# (it builds the no-op server); ports 18851-18853 free.
set -euo pipefail
ROUNDS=${1:-6}; SECS=${2:-6}
project=$(pwd)
bin=${FOOTFALL_BIN:-$project/target/release/footfall}
noop=${NOOP_TARGET_DIR:-${TMPDIR:-/tmp}/footfall-noop-target}/release/noop-baseline
[ -x "$bin" ] || { echo "no release binary at $bin: run cargo build --release" >&2; exit 2; }
[ -x "$noop" ] || { echo "no no-op server at $noop: run ../shared/bench/ingest.sh once" >&2; exit 2; }
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
"$noop" 127.0.0.1:18851 >/dev/null 2>&1 & pids+=($!)
"$bin" serve --bind 127.0.0.1:18852 --db "$work/idle.db" --roll-up-priority idle >/dev/null 2>&1 & pids+=($!)
"$bin" serve --bind 127.0.0.1:18853 --db "$work/normal.db" --roll-up-priority normal >/dev/null 2>&1 & pids+=($!)
for port in 18851 18852 18853; do
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
done
rps() {
  wrk -t2 -c64 -d"${SECS}s" -s "$project/../shared/bench/visit.lua" "http://127.0.0.1:$1" \
    | sed -nE 's/^RESULT.*rps=([0-9]+).*/\1/p'
}
for r in $(seq 1 "$ROUNDS"); do
  n=$(rps 18851)
  if (( r % 2 )); then a=$(rps 18852); sleep 1; b=$(rps 18853); sleep 1
  else b=$(rps 18853); sleep 1; a=$(rps 18852); sleep 1; fi
  echo "$n $a $b" | awk '{printf "noop %d  idle %d (%.3f)  normal %d (%.3f)\n", $1, $2, $2/$1, $3, $3/$1}'
  echo "$n $a $b" >>"$work/rounds"
done
awk '{n+=$1; a+=$2; b+=$3} END {printf "mean: noop %d  idle %d (%.3f)  normal %d (%.3f)  idle/normal %.3f\n", n/NR, a/NR, a/n, b/NR, b/n, a/b}' "$work/rounds"
