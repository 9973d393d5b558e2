#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS each (default 60), starting
# from the committed seeds (fuzz/seeds/TARGET) plus what earlier runs found
# (fuzz/corpus/TARGET, not committed). Needs the nightly toolchain; installs
# cargo-fuzz when missing. A crash stops the script and leaves its input in
# fuzz/artifacts/TARGET: turn it into a regression test in the ordinary suite.
#
# usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(http_head chunked resp resp_differential pg_backend pg_types loadgen_response)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cd fuzz
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t: ${secs}s"
  cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -rss_limit_mb=2048
done
