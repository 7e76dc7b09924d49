#!/usr/bin/env bash
# A/B of two footfall builds or flag sets: POST /visit requests/s of each, against the no-op
# baseline in the same round.
#
#   scripts/ab.sh ROUNDS SECONDS 'A_BINARY [SERVE FLAGS]' 'B_BINARY [SERVE FLAGS]'   (from the project's root)
#   scripts/ab.sh 6 6 /tmp/before/footfall target/release/footfall
#
# Starts the no-op server and both footfalls on their own databases, then each round runs the wrk
# script of ../shared/bench/ingest.sh against noop, A and B in turn (odd rounds A first, even
# rounds B first, so neither always follows the noop run), with a second's pause after each
# footfall run for its roll-up to catch up. Prints one line per round and the means. On this
# shared machine, trust a difference only when one side is ahead in most rounds and again in a
# second run.
#
# Needs: wrk, curl, ../shared/bench/ingest.sh run once (it builds the no-op server); ports
# 18851-18853 free.
set -euo pipefail
[ $# -eq 4 ] || { sed -n '5,6p' "$0" >&2; exit 2; }
ROUNDS=$1; SECS=$2
read -ra a_cmd <<<"$3"
read -ra b_cmd <<<"$4"
project=$(pwd)
noop=${NOOP_TARGET_DIR:-${TMPDIR:-/tmp}/footfall-noop-target}/release/noop-baseline
for bin in "${a_cmd[0]}" "${b_cmd[0]}"; do
  [ -x "$bin" ] || { echo "no footfall binary at $bin" >&2; exit 2; }
done
[ -x "$noop" ] || { echo "no no-op server at $noop: run ../shared/bench/ingest.sh once" >&2; exit 2; }
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
"$noop" 127.0.0.1:18851 >/dev/null 2>&1 & pids+=($!)
"${a_cmd[0]}" serve --bind 127.0.0.1:18852 --db "$work/a.db" "${a_cmd[@]:1}" >/dev/null 2>&1 & pids+=($!)
"${b_cmd[0]}" serve --bind 127.0.0.1:18853 --db "$work/b.db" "${b_cmd[@]:1}" >/dev/null 2>&1 & pids+=($!)
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
  [ -n "$n" ] && [ -n "$a" ] && [ -n "$b" ] || { echo "round $r: a wrk run printed no RESULT line" >&2; exit 1; }
  echo "$n $a $b" | awk '{printf "noop %d  A %d (%.3f)  B %d (%.3f)\n", $1, $2, $2/$1, $3, $3/$1}'
  echo "$n $a $b" >>"$work/rounds"
done
awk '{n+=$1; a+=$2; b+=$3; ahead+=($3>$2)} END {printf "mean: noop %d  A %d (%.3f)  B %d (%.3f)  B/A %.3f, B ahead in %d of %d rounds\n", n/NR, a/NR, a/n, b/NR, b/n, b/a, ahead, NR}' "$work/rounds"
