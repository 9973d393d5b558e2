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
cargo build --examples
cargo test --workspace --all-targets "$@"
# Instructions per request and per query against the committed baseline:
# more than 3% above it fails (benches/icount.sh explains).
benches/icount.sh
# The integration suites a second time on the epoll backend, which is what
# runs where io_uring is blocked (container seccomp profiles): HTTP and the
# runtime, PostgreSQL, Redis, pools and cache, and the example end to end.
# Selected from the whole workspace (by target name, with every library's
# unit tests) rather than with `-p`: features then resolve as in the run
# above and nothing is compiled again (with `-p`, about 90 s of rebuilds).
export TIDEPOOL_IO=epoll
targets=(--lib --test http --test runtime)
for f in drivers/tests/*.rs tests/*.rs; do
  targets+=(--test "$(basename "$f" .rs)")
done
exec cargo test --workspace "${targets[@]}" "$@"
