#!/usr/bin/env bash
# Where footfall's CPU goes under POST /visit load, per thread: CPU microseconds per request of
# each thread group (HTTP workers, writer, roll-up thread, ...), the roll-up's catch-up included.
#
#   scripts/cpu-per-thread.sh [ROUNDS] [SECONDS] [CONNECTIONS]      (from the project's root)
#
# Runs the wrk script of ../shared/bench/ingest.sh against one footfall on one database for
# ROUNDS runs (as ingest.sh does), waits a second after each so the roll-up thread catches up,
# and divides each thread's CPU time (user + system, from /proc/PID/task) by the requests.
# Steadier than requests/s on a shared machine, and it shows which thread a change moved.
#
# Needs: wrk, curl, a release build (cargo build --release); port 18823 free. The binary in
# FOOTFALL_BIN, extra `footfall serve` flags in FOOTFALL_ARGS.
set -euo pipefail
ROUNDS=${1:-3}; SECS=${2:-8}; CONNS=${3:-64}
project=$(pwd)
bin=${FOOTFALL_BIN:-$project/target/release/footfall}
[ -x "$bin" ] || { echo "no release binary at $bin: run cargo build --release" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 2; }

work=$(mktemp -d)
# shellcheck disable=SC2086 # FOOTFALL_ARGS is a list of flags
"$bin" serve --bind 127.0.0.1:18823 --db "$work/bench.db" ${FOOTFALL_ARGS:-} >"$work/footfall.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18823/health >/dev/null && break; sleep 0.1; done

# Clock ticks (user + system) per thread name, summed over threads of the same name.
ticks() {
  for task in /proc/"$pid"/task/*; do
    echo "$(tr ' ' _ <"$task/comm") $(awk '{print $14 + $15}' "$task/stat")"
  done | awk '{t[$1] += $2} END {for (k in t) print k, t[k]}' | sort
}
ticks >"$work/before"
requests=0
for _ in $(seq 1 "$ROUNDS"); do
  out=$(wrk -t2 -c"$CONNS" -d"${SECS}s" -s "$project/../shared/bench/visit.lua" http://127.0.0.1:18823 | grep '^RESULT')
  echo "$out"
  requests=$((requests + $(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$out")))
  sleep 1
done
ticks >"$work/after"
hz=$(getconf CLK_TCK)
join "$work/before" "$work/after" | awk -v n="$requests" -v hz="$hz" '
  { us = ($3 - $2) * 1e6 / hz / n; total += us; if (us >= 0.01) printf "%-18s %6.2f µs/request\n", $1, us }
  END { printf "%-18s %6.2f µs/request over %d requests\n", "all threads", total, n }'
