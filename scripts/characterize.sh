#!/usr/bin/env bash
# Regenerates the PoolAutoscale characterisation: runs the simulator over
# every traffic pattern and policy and writes per-second series
# (docs/characterization/<pattern>-<policy>.csv, not committed), summary.md
# and one chart per pattern (<pattern>.svg). See docs/autoscale.md.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release -p tidepool-supervisor --example characterize -- --gradient "$@"
