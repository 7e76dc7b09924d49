#!/usr/bin/env bash
# A/B of `--roll-up-priority`: POST /visit requests/s of footfall with routine roll-ups at idle
# priority (A) and at normal priority (B), each against the no-op baseline in the same round
# (see scripts/ab.sh).
#
#   scripts/roll-up-priority-ab.sh [ROUNDS] [SECONDS]      (from the project's root)
#
# Needs: a release build (cargo build --release) and what scripts/ab.sh needs.
set -euo pipefail
bin=${FOOTFALL_BIN:-$(pwd)/target/release/footfall}
[ -x "$bin" ] || { echo "no release binary at $bin: run cargo build --release" >&2; exit 2; }
exec "$(dirname "$0")/ab.sh" "${1:-6}" "${2:-6}" \
  "$bin --roll-up-priority idle" "$bin --roll-up-priority normal"
