#!/usr/bin/env bash
# Where POST /visit's time goes, in a form that survives a noisy machine: CPU time per request.
#
#   scripts/cpu-per-request.sh [ROUNDS] [SECONDS] [CONNECTIONS]      (from the project's root)
#
# Runs the same wrk script as ../shared/bench/ingest.sh against the no-op baseline and footfall,
# alternately, footfall on one database across rounds (as ingest.sh does), and prints for each
# run: requests/s, the server's CPU microseconds per request (user + system, all threads, from
# /proc), wrk's, and how much of the machine's CPU time was idle during the run (/proc/stat).
# When the two cores are kept busy by wrk and the server, throughput is about
# 2 cores / (server + wrk CPU per request), so a change that lowers footfall_us helps even when
# requests/s moves less than the noise between runs, as long as idle_pct stays low: footfall
# idles more than the no-op server (~8% against ~2; ~20% when the roll-up still stopped
# recording; see the README's performance section).
#
# Needs: wrk, curl, python3, GNU time at /usr/bin/time (Debian package `time`), cargo (it builds
# the no-op server) and a release build (cargo build --release); ports 18821 and 18822 free.
# Extra `footfall serve` flags can be passed in FOOTFALL_ARGS; the binary in FOOTFALL_BIN.
set -euo pipefail
ROUNDS=${1:-3}; SECS=${2:-8}; CONNS=${3:-64}
project=$(pwd)
bench="$project/../shared/bench"
bin=${FOOTFALL_BIN:-$project/target/release/footfall}
[ -x "$bin" ] || { echo "no release binary at $bin: run cargo build --release" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "GNU time is missing: apt-get install -y time" >&2; exit 2; }

work=$(mktemp -d)
noop_target=${NOOP_TARGET_DIR:-${TMPDIR:-/tmp}/footfall-noop-target}
(cd "$bench/noop" && CARGO_TARGET_DIR="$noop_target" cargo build --release -q)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

"$noop_target/release/noop-baseline" 127.0.0.1:18821 >"$work/noop.log" 2>&1 & pids+=($!)
# shellcheck disable=SC2086 # FOOTFALL_ARGS is a list of flags
"$bin" serve --bind 127.0.0.1:18822 --db "$work/bench.db" ${FOOTFALL_ARGS:-} >"$work/footfall.log" 2>&1 & pids+=($!)
wait_up() {  # $1 = port, $2 = log
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$1/health" >/dev/null && return 0; sleep 0.1; done
  echo "the server on port $1 did not start:" >&2; cat "$2" >&2; exit 1
}
wait_up 18821 "$work/noop.log"
wait_up 18822 "$work/footfall.log"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Idle (idle + iowait) and total jiffies of the whole machine.
machine_ticks() { awk '/^cpu / {print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
measure() {  # $1 = name, $2 = port, $3 = pid
  local before after machine_before machine_after out
  before=$(cpu_ticks "$3"); machine_before=$(machine_ticks)
  out=$({ /usr/bin/time -f "WRKCPU %U %S" wrk -t2 -c"$CONNS" -d"${SECS}s" -s "$bench/visit.lua" \
    "http://127.0.0.1:$2"; } 2>&1)
  after=$(cpu_ticks "$3"); machine_after=$(machine_ticks)
  python3 - "$1" "$before" "$after" "$(getconf CLK_TCK)" "$out" $machine_before $machine_after <<'PY'
import re, sys
name, before, after, hz, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
idle0, total0, idle1, total1 = map(float, sys.argv[6:10])
req = int(re.search(r"requests=(\d+)", out).group(1))
rps = int(re.search(r"rps=(\d+)", out).group(1))
user, system = map(float, re.search(r"WRKCPU ([\d.]+) ([\d.]+)", out).groups())
print(f"{name:8} rps={rps:6d} server_us_per_req={(after - before) / hz * 1e6 / req:5.1f} "
      f"wrk_us_per_req={(user + system) * 1e6 / req:5.1f} "
      f"idle_pct={(idle1 - idle0) / (total1 - total0) * 100:4.1f}")
PY
}
for _ in $(seq 1 "$ROUNDS"); do
  measure noop 18821 "${pids[0]}"
  measure footfall 18822 "${pids[1]}"
done
