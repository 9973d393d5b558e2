#!/usr/bin/env bash
# What TLS costs Tidepool's example, and how its HTTPS compares with hyper
# behind tokio-rustls (keep-alive, and a new connection per request); /db
# with PostgreSQL encrypted against cleartext (needs wrk with TLS:
# apt-get install -y wrk, and the PostgreSQL server binaries).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --example hello
cargo build --release -p tidepool-benches --bin compare_tls --bin peer_hyper_tls
cargo build --release -p tidepool-loadgen
exec target/release/compare_tls "$@"
