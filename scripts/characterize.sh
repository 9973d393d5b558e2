#!/usr/bin/env bash
# Regenerates the PoolAutoscale characterisation: runs the simulator over
# every traffic pattern and policy and writes per-second series
# (docs/characterization/<pattern>-<policy>.csv, not committed), summary.md
# and one chart per pattern (<pattern>.svg). See docs/autoscale.md. Then
# the fleet budget's simulation (docs/fleet.md): its table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release -p tidepool-supervisor --example characterize -- --gradient "$@"
cargo run --release -p tidepool-supervisor --example fleet
