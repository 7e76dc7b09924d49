#!/usr/bin/env bash
# Read latency while visits arrive at a steady rate: what a dashboard sees during traffic.
#
#   scripts/queries-under-load.sh DB [BINARY] [RATE]        (from the project's root)
#
# Serves a COPY of the database DB (e.g. 1M visits imported from ../shared/bench/gen_visits.py)
# with BINARY (default $CARGO_TARGET_DIR/release/footfall, else target/release/footfall), and:
#
#   1. capacity: `wrk -t2 -c64 -d8s` of ../shared/bench/visit.lua (POST /visit, as fast as it
#      goes): the rate the server can record (skipped when RATE is given);
#   2. idle: each read below 15 times with no load;
#   3. load: POST /visit paced at RATE (default half the capacity) with scripts/paced-visit.lua
#      (RATE/38 connections, each waiting 20 ms after each answer) for 25 s, and from its
#      3rd second to its 23rd the reads in turn: /summary?hours=24, /stats and this year's
#      /breakdown/all/pageview/YEAR, then READ_PAUSE seconds (default 0.2; e.g. 2 for a
#      dashboard that refreshes every few seconds), and again.
#
# Prints each read's count, median and 90th percentile, idle and under load, and the write rate
# achieved. Only answers given while the load runs count: the script fails if the load ended
# before the last read, if any read is not 200, or if the achieved rate is under 90% of RATE.
# The database (all its files) is copied so that every run starts from the same data.
#
# Needs: wrk, curl, python3; port 18854 free; BENCH_DIR if ../shared/bench is elsewhere.
set -euo pipefail
db=${1:?usage: scripts/queries-under-load.sh DB [BINARY] [RATE]}
bin=${2:-${CARGO_TARGET_DIR:-$(pwd)/target}/release/footfall}
rate=${3:-}
pause=${READ_PAUSE:-0.2}
here=$(cd "$(dirname "$0")" && pwd)
# The team's benchmark folder sits beside the project (../shared/bench).
bench=${BENCH_DIR:-$here/../../shared/bench}
[ -x "$bin" ] || { echo "no footfall binary at $bin: cargo build --release" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 2; }
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
# Every file of the database: the visits file, the roll-ups file beside it and their WALs.
cp "${db%.db}".* "$work/"
copy="$work/$(basename "$db")"
base=http://127.0.0.1:18854
"$bin" serve --bind 127.0.0.1:18854 --db "$copy" >"$work/server.log" 2>&1 & pids+=($!)
for _ in $(seq 1 200); do curl -sf "$base/health" >/dev/null && break; sleep 0.1; done
year=$(date -u +%Y)
reads=("/summary?hours=24" "/stats" "/breakdown/all/pageview/$year")

if [ -z "$rate" ]; then
  capacity=$(wrk -t2 -c64 -d8s -s "$bench/visit.lua" "$base" | grep '^RESULT')
  echo "capacity: $capacity"
  rate=$(( $(sed -E 's/.*rps=([0-9]+).*/\1/' <<<"$capacity") / 2 ))
  # Start again from the copy: the visits just recorded are not the database measured.
  kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true
  rm -f "$work"/*.db*
  cp "${db%.db}".* "$work/"
  "$bin" serve --bind 127.0.0.1:18854 --db "$copy" >"$work/server.log" 2>&1 & pids=($!)
  for _ in $(seq 1 200); do curl -sf "$base/health" >/dev/null && break; sleep 0.1; done
fi

for _ in $(seq 1 15); do
  for r in "${reads[@]}"; do
    curl -s -o /dev/null -w "$r %{http_code} %{time_total}\n" "$base$r"
  done
done >"$work/idle"

# 20 ms between requests per connection, and as many connections as the rate needs at ~26 ms
# a round trip (wrk's delay is whole milliseconds: a short one would round the rate away).
delay=20
conns=$(( (rate * 26 + 999) / 1000 ))
WRK_DELAY_MS=$delay wrk -t2 -c"$conns" -d25s -s "$here/paced-visit.lua" "$base" >"$work/load" 2>&1 & load=$!
pids+=("$load")
sleep 3
end=$((SECONDS + 20))
while [ "$SECONDS" -lt "$end" ]; do
  for r in "${reads[@]}"; do
    curl -s -o /dev/null -w "$r %{http_code} %{time_total}\n" "$base$r"
  done
  sleep "$pause"
done >"$work/times"
kill -0 "$load" 2>/dev/null || { echo "the load ended before the last read: nothing measured under load" >&2; exit 1; }
wait "$load"
result=$(grep '^RESULT' "$work/load")
echo "load: target $rate visits/s ($conns connections, ${delay} ms between requests): $result"
python3 - "$work/idle" "$work/times" "$rate" "$result" <<'PY'
import re, statistics, sys
def read(path):
    times, failed = {}, 0
    for line in open(path):
        path_, status, seconds = line.split()
        if status != "200":
            failed += 1
            continue
        times.setdefault(path_, []).append(float(seconds) * 1000)
    if failed:
        sys.exit(f"{failed} reads were not answered 200: their times are not latencies")
    return times
idle, loaded = read(sys.argv[1]), read(sys.argv[2])
for path, ms in loaded.items():
    ms.sort()
    i = sorted(idle[path])
    print(f"{path}: idle median {statistics.median(i):.1f} ms | under load n={len(ms)} "
          f"median {statistics.median(ms):.1f} ms p90 {ms[int(0.9 * len(ms))]:.1f} ms")
achieved = float(re.search(r"rps=(\d+)", sys.argv[4]).group(1))
if achieved < 0.9 * float(sys.argv[3]):
    sys.exit(f"the load reached {achieved:.0f} visits/s, under 90% of {sys.argv[3]}: not the load asked for")
PY
