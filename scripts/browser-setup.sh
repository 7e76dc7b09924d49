#!/usr/bin/env bash
# Installs what the real-browser tests (tests/browser/run.mjs, run by `cargo test` through
# tests/api/browser.rs) need on a fresh Debian machine: Chromium at /usr/bin/chromium and the
# pinned playwright-core in tests/browser/node_modules. Idempotent and quiet: a second run
# installs nothing and prints nothing. Node.js >= 20 must already be installed (Debian 12's
# own nodejs is 18, too old for playwright-core).
#
# Run with: scripts/browser-setup.sh        (as root, or with sudo available)
set -euo pipefail

cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if [ ! -x /usr/bin/chromium ]; then
    as_root apt-get update -qq
    # Recommended packages bring the fonts the dashboard screenshot is drawn with.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

if ! command -v node >/dev/null 2>&1; then
    echo "browser-setup: node (>= 20) is not installed" >&2
    exit 1
fi
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
    echo "browser-setup: node $(node --version) is too old: playwright-core needs >= 20" >&2
    exit 1
fi

# npm writes node_modules/.package-lock.json on every install: when it is newer than the
# lockfile, what the lockfile asks for is already there.
installed=tests/browser/node_modules/.package-lock.json
if [ ! -f "$installed" ] || [ tests/browser/package-lock.json -nt "$installed" ]; then
    npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error >/dev/null
fi
