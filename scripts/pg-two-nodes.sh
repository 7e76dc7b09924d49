#!/usr/bin/env bash
# Run from the project root after cargo build --release (FOOTFALL_BIN overrides the binary);
# needs wrk and psql, and PostgreSQL at PG (default postgres://postgres@127.0.0.1:5432).
# One node vs two nodes on one PostgreSQL database: requests/s, p99, and the tail's length
# (visits above the roll-up watermark) sampled every 0.5 s under load.
set -euo pipefail
PG=${PG:-postgres://postgres@127.0.0.1:5432}; BIN=${FOOTFALL_BIN:-target/release/footfall}; LUA=${LUA:-../shared/bench/visit.lua}
SECS=${1:-8}
tail_len() { psql "$1" -tAc "select coalesce(pg_sequence_last_value('visits_id_seq'),0) - rolled_up_to from progress"; }
sample() { local max=0; for _ in $(seq 1 $((SECS*2))); do t=$(tail_len "$1"); [ "$t" -gt "$max" ] && max=$t; sleep 0.5; done; echo "$max"; }
run() { # $1 = nodes
  db=fftwo_$$_$1; psql $PG/postgres -qc "create database $db"; url=$PG/$db; pids=()
  for i in $(seq 1 "$1"); do "$BIN" serve --bind 127.0.0.1:$((18870+i)) --db "$url" --rate-limit-per-minute 0 --ip-rate-per-second 0 >/dev/null 2>&1 & pids+=($!); done
  sleep 2
  wpids=()
  for i in $(seq 1 "$1"); do (wrk -t1 -c$((64/$1)) -d${SECS}s -s $LUA http://127.0.0.1:$((18870+i)) | grep RESULT > /tmp/two_$1_$i.txt) & wpids+=($!); done
  maxtail=$(sample "$url"); wait "${wpids[@]}"
  sleep 1; for p in "${pids[@]}"; do kill "$p"; done; sleep 1
  echo "nodes=$1 max_tail=$maxtail"; cat /tmp/two_$1_*.txt
  psql $PG/postgres -qc "drop database $db with (force)"
}
run 1; run 2
