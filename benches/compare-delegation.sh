#!/usr/bin/env bash
# Builds Tidepool's example in release mode and measures what delegating
# statements between workers costs (/db and /redis, 2 workers, 1 connection
# against 2; needs wrk: apt-get install -y wrk, and PostgreSQL and
# redis-server, which scripts/ensure-deps.sh installs).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --example hello
cargo build --release -p tidepool-benches --bin compare_delegation
exec target/release/compare_delegation "$@"
