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
  targets=(http_head http_conn chunked resp resp_differential pg_backend pg_types loadgen_response)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cd fuzz
mkdir -p logs
summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t: ${secs}s"
  cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
    2>&1 | tee "logs/$t.log" | grep -E "DONE|Done|ERROR|SUMMARY|panicked" || true
  if [ "${PIPESTATUS[0]}" -ne 0 ]; then
    echo "$t: FAILED (log: fuzz/logs/$t.log, input: fuzz/artifacts/$t)" >&2
    exit 1
  fi
  # libFuzzer's last lines: "#N DONE cov: C ft: F corp: K/..." and "Done N runs in S second(s)".
  done_line=$(grep -E "^#[0-9]+[[:space:]]+DONE" "logs/$t.log" | tail -1 || true)
  runs=$(grep -oE "Done [0-9]+ runs" "logs/$t.log" | tail -1 | cut -d' ' -f2 || true)
  cov=$(echo "$done_line" | grep -oE "cov: [0-9]+" | cut -d' ' -f2 || true)
  ft=$(echo "$done_line" | grep -oE "ft: [0-9]+" | cut -d' ' -f2 || true)
  summary+=("$t: ${runs:-?} runs, cov ${cov:-?}, ft ${ft:-?}, corpus $(find "corpus/$t" -type f | wc -l)")
done
echo "== summary (${secs}s each; logs in fuzz/logs)"
printf '%s\n' "${summary[@]}"
