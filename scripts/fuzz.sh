#!/usr/bin/env bash
# Fuzz footfall's HTTP API from its own OpenAPI document with schemathesis.
#
#   scripts/fuzz.sh [BINARY]        (or FOOTFALL_BIN=BINARY; from anywhere)
#
# Installs schemathesis (pinned, below) from PyPI into $CARGO_TARGET_DIR/fuzz-venv (once), builds
# footfall unless a binary is given (debug by default: overflow checks and debug assertions turn
# silent arithmetic bugs into 500s that the fuzzer reports), serves it on a temporary database with a temporary admin token and every
# rate limit off (the fuzzer would otherwise spend its budget on 429s), and runs schemathesis
# against http://127.0.0.1:PORT/openapi.json with `--checks all`: every operation is tried with
# up to FUZZ_MAX_EXAMPLES generated requests, valid and invalid, and an answer must match the
# document (status, schema, content type, headers), a request the document allows must not be
# refused (positive_data_acceptance) and one it forbids must not be accepted
# (negative_data_acceptance).
#
# Fails (non-zero exit) when schemathesis reports any failure, or when the server panicked or
# died during the run.
#
# Environment:
#   FUZZ_MAX_EXAMPLES  generated requests per operation and phase (default 100)
#   FUZZ_SEED          schemathesis seed, for a reproducible run (default: random)
#   FUZZ_RELEASE=1     build and fuzz the release build instead of the debug one
#   FUZZ_VENV          where schemathesis is installed (default $CARGO_TARGET_DIR/fuzz-venv)
#   FUZZ_WORKERS       concurrent schemathesis workers (default 1: with more, hypothesis
#                      4.x on Python 3.11 sometimes dies in `ast.parse` inside its threads)
#   FUZZ_PG            a PostgreSQL server (postgres://user@host:port, no database): fuzz
#                      footfall on a fresh database there (created by footfall, dropped with
#                      psql at the end) instead of a temporary SQLite file
#
# Reports (JUnit XML, NDJSON events) and the server's log are left in target/fuzz-report.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
venv=${FUZZ_VENV:-$target_dir/fuzz-venv}
report_dir="$target_dir/fuzz-report"
binary=${1:-${FOOTFALL_BIN:-}}
max_examples=${FUZZ_MAX_EXAMPLES:-100}
workers=${FUZZ_WORKERS:-1}

# Pinned: each release adds checks and changes what the data generators send, so a new
# version can fail a build that passed. Raise it on purpose, with a run of this script.
schemathesis_version=4.32.5
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $schemathesis_version"; then
    echo "installing schemathesis $schemathesis_version into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "schemathesis==$schemathesis_version"
fi
"$venv/bin/schemathesis" --version >&2

if [[ -n "$binary" ]]; then
    binary=$(realpath "$binary")
    [[ -x "$binary" ]] || { echo "no footfall binary at $binary" >&2; exit 2; }
elif [[ "${FUZZ_RELEASE:-0}" == 1 ]]; then
    cargo build --release --bin footfall
    binary="$target_dir/release/footfall"
else
    cargo build --bin footfall
    binary="$target_dir/debug/footfall"
fi

workdir=$(mktemp -d)
db="$workdir/visits.db"
if [[ -n "${FUZZ_PG:-}" ]]; then
    pgdb="footfall_fuzz_$$_$RANDOM"
    db="${FUZZ_PG%/}/$pgdb"
fi
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [[ -n "${pgdb:-}" ]]; then
        psql "${FUZZ_PG%/}/postgres" -qc "DROP DATABASE IF EXISTS $pgdb" >/dev/null 2>&1 || true
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT

token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
mkdir -p "$report_dir"
server_log="$report_dir/server.log"

"$binary" serve \
    --bind "127.0.0.1:$port" \
    --db "$db" \
    --admin-token "$token" \
    --rate-limit-per-minute 0 \
    --bulk-rate-limit-per-minute 0 \
    --ip-rate-per-second 0 \
    --log-format json \
    2>"$server_log" &
server_pid=$!

for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "footfall exited before it answered; its log:" >&2
        cat "$server_log" >&2
        exit 1
    fi
    sleep 0.1
done

# POST /import takes JSONL (`application/x-ndjson`, a string in the document): send it as
# text. Schemathesis has no serializer of its own for that type.
cat >"$workdir/footfall_fuzz_hooks.py" <<'PY'
import schemathesis

schemathesis.serializer.alias("application/x-ndjson", "text/plain")
PY

seed_args=()
if [[ -n "${FUZZ_SEED:-}" ]]; then
    seed_args=(--seed "$FUZZ_SEED")
fi

# Schemathesis keeps a `.schemathesis/` cache (for `st replay`) in its working directory:
# keep it beside the reports, out of the source tree.
cd "$report_dir"
status=0
PYTHONPATH="$workdir${PYTHONPATH:+:$PYTHONPATH}" SCHEMATHESIS_HOOKS=footfall_fuzz_hooks \
    "$venv/bin/schemathesis" --config-file "$root/scripts/schemathesis.toml" \
    run "$base/openapi.json" \
    --checks all \
    --header "Authorization: Bearer $token" \
    --max-examples "$max_examples" \
    --workers "$workers" \
    --request-timeout 30 \
    --suppress-health-check all \
    --generation-database none \
    --no-color \
    --report junit,ndjson \
    --report-dir "$report_dir" \
    "${seed_args[@]}" \
    || status=$?

if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "FAIL: footfall died during the run (log: $server_log)" >&2
    status=1
fi
if grep -q 'panicked' "$server_log"; then
    echo "FAIL: footfall panicked during the run:" >&2
    grep 'panicked' "$server_log" | head -5 >&2
    status=1
fi

if [[ $status -eq 0 ]]; then
    echo "fuzz: no failures (reports in $report_dir)"
else
    echo "fuzz: FAILED with status $status (reports and server log in $report_dir)" >&2
fi
exit "$status"
