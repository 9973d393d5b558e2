#!/usr/bin/env bash
# Builds Tidepool's example, the hyper peer and the floor responder in
# release mode, then runs the side-by-side plaintext comparison (needs wrk:
# apt-get install -y wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --example hello
cargo build --release -p tidepool-benches --bin peer_hyper --bin floor_uring --bin compare_http
exec target/release/compare_http "$@"
