#!/usr/bin/env bash
# Builds Tidepool's example in release mode and compares its epoll backend
# with its io_uring backend (plaintext, /db, /redis; needs wrk:
# apt-get install -y wrk, and PostgreSQL and redis-server, which
# scripts/ensure-deps.sh installs).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --example hello
cargo build --release -p tidepool-benches --bin compare_io --bin floor_epoll --bin floor_uring
exec target/release/compare_io "$@"
