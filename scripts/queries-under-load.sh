#!/usr/bin/env bash
# Query latency while POST /visit load runs: what a dashboard sees during a burst, when every
# answer adds the tail not yet rolled up (see the README's "how it works").
#
#   scripts/queries-under-load.sh ['BINARY [SERVE FLAGS]']      (from the project's root)
#
# Starts footfall (default target/release/footfall) on a fresh database, runs the wrk script of
# ../shared/bench/ingest.sh for 20 s, and from its 3rd to its 18th second asks in turn for
# /summary?hours=24, /stats and this year's /breakdown/all/pageview; prints each one's count,
# median and 90th percentile. Only answers given while wrk runs are counted: the script fails if
# wrk has finished before the last query, or if any query is not answered 200. Compare two
# builds by running it for each in turn.
#
# Needs: wrk, curl, python3; port 18854 free.
set -euo pipefail
read -ra cmd <<<"${1:-$(pwd)/target/release/footfall}"
[ -x "${cmd[0]}" ] || { echo "no footfall binary at ${cmd[0]}: run cargo build --release" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 2; }
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
base=http://127.0.0.1:18854
"${cmd[0]}" serve --bind 127.0.0.1:18854 --db "$work/q.db" "${cmd[@]:1}" >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 1 100); do curl -sf "$base/health" >/dev/null && break; sleep 0.1; done
wrk -t2 -c64 -d20s -s "$(pwd)/../shared/bench/visit.lua" "$base" >/dev/null & load=$!
pids+=("$load")
sleep 3
end=$((SECONDS + 15))
year=$(date -u +%Y)
while [ "$SECONDS" -lt "$end" ]; do
  curl -s -o /dev/null -w "/summary?hours=24 %{http_code} %{time_total}\n" "$base/summary?hours=24"
  curl -s -o /dev/null -w "/stats %{http_code} %{time_total}\n" "$base/stats"
  curl -s -o /dev/null -w "/breakdown/all/pageview/$year %{http_code} %{time_total}\n" "$base/breakdown/all/pageview/$year"
  sleep 0.05
done >"$work/times"
kill -0 "$load" 2>/dev/null || { echo "the load ended before the last query: nothing measured under load" >&2; exit 1; }
wait "$load"
python3 - "$work/times" <<'EOF'
import statistics, sys
times = {}
failed = 0
for line in open(sys.argv[1]):
    path, status, seconds = line.split()
    if status != "200":
        failed += 1
        continue
    times.setdefault(path, []).append(float(seconds) * 1000)
if failed:
    sys.exit(f"{failed} queries were not answered 200: their times are not latencies")
for path, ms in times.items():
    ms.sort()
    print(f"{path}: n={len(ms)} median={statistics.median(ms):.1f} ms p90={ms[int(0.9 * len(ms))]:.1f} ms")
EOF
