#!/usr/bin/env bash
# Builds Tidepool's example, the load generator, the hyper and may-minihttp
# peers and the bare floors (io_uring, epoll) in release mode, then runs the
# fixed-rate latency comparison (open loop at 25/50/80% of capacity).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example hello
cargo build --release -p tidepool-loadgen
cargo build --release -p tidepool-benches --bin peer_hyper --bin peer_may --bin floor_uring --bin floor_epoll --bin compare_latency
exec target/release/compare_latency "$@"
