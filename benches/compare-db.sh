#!/usr/bin/env bash
# Builds Tidepool's example and the axum peer in release mode, then runs the
# /db and /redis comparison on ephemeral PostgreSQL and Redis (needs wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
scripts/ensure-deps.sh
cargo build --release --example hello
cargo build --release -p tidepool-benches --bin peer_axum --bin compare_db
exec target/release/compare_db "$@"
