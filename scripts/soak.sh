#!/usr/bin/env bash
# A soak with faults: the example app with PostgreSQL and Redis under the
# demo's composite pattern for MINUTES (default 10), PostgreSQL killed -9
# and restarted every 2 minutes and Redis half a period later. Passes when
# the server's RSS and descriptors stay flat, no request hangs, errors
# happen only in the fault windows (and, in the first 10 s, as 503s while
# the pools grow from their floor), and the pools end idle. Prints the
# verdict; the loadgen report and soak.txt go to soak-out/ (not committed).
#
# usage: scripts/soak.sh [MINUTES] [tidepool-loadgen soak options]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
shift || true
scripts/ensure-deps.sh
cargo build --release --quiet -p tidepool-loadgen
cargo build --release --quiet --example hello
exec target/release/tidepool-loadgen soak --minutes "$minutes" \
  --app target/release/examples/hello --out soak-out "$@"
