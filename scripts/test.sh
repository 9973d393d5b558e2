#!/usr/bin/env bash
# Runs every test of the workspace. Database tests start their own
# PostgreSQL and redis-server, so the server binaries must be installed:
# ensure-deps.sh installs them from apt when missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x scripts/ensure-deps.sh ]; then
  scripts/ensure-deps.sh
fi
# End-to-end tests run the example server as a process; `cargo test`
# builds examples only as test harnesses, so build the binary first.
cargo build --example hello
exec cargo test --workspace --all-targets "$@"
