#!/usr/bin/env bash
# Skewed demand in a fleet: the one loaded instance of four sharing a
# budget of B PostgreSQL connections, against a single instance that owns
# all of B (no lease: its pools sized B), on the same load. Each round
# starts the single instance, then the fleet of four, and drives
# open-loop Poisson load of the
# example's /db/sleep?ms=20 at each rate to the first instance only: 2 TTLs
# to let its lease follow the load, then the measured window. Prints, per
# rate, each side's acquire-wait p99 (the pool's own summary over the
# window) and request p99 (the generator's), and the paired ratios.
#
# The other three instances keep their floor of one connection each, so
# the loaded instance can hold at most B - 3 (and its /db pool one less:
# the example's shared pool keeps its own floor). The rates are fractions
# of that.
#
# usage: benches/compare-fleet.sh [ROUNDS, default 3] [SECONDS measured, default 10]
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -n "${TRACE:-}" ]; then exec 9> "$TRACE"; BASH_XTRACEFD=9; set -x; fi
rounds=${1:-3}
secs=${2:-10}
budget=${BUDGET:-16}
ttl_ms=1500
# /db connections the loaded instance can hold: B - 3 floors - 1 shared.
room=$((budget - 4))
rates=${RATES:-"$((room * 50 / 4)) $((room * 50 / 2)) $((room * 50 * 3 / 4))"}
scripts/ensure-deps.sh || exit 1
cargo build --release --quiet --example hello || exit 1
cargo build --release --quiet -p tidepool-loadgen -p tidepool-benches --bin dbservers || exit 1
out=$(mktemp -d)
mkfifo "$out/hold"
target/release/dbservers < "$out/hold" > "$out/urls" &
dbs=$!
exec 3> "$out/hold"
apps=()
cleanup() {
  for p in "${apps[@]}"; do kill "$p" 2>/dev/null; done
  exec 3>&-
  kill "$dbs" 2>/dev/null
  wait "$dbs" 2>/dev/null
  rm -rf "$out"
}
trap cleanup EXIT
while ! grep -q '^PG=' "$out/urls" 2>/dev/null; do sleep 0.1; done
pg=$(sed -n 's/^PG=//p' "$out/urls")

metric() { # port name -> value (empty if absent)
  # awk reads to the end: leaving early would fail curl (EPIPE) and,
  # under pipefail, the script.
  curl -sf "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m && !found {print $2; found = 1}'
}

for round in $(seq 1 "$rounds"); do
  for setup in alone floors fleet; do
    fleet="bench-$round"
    n=1
    case $setup in
      # All of B, no lease: the /db pool B - 1 and the shared one 1.
      alone) pools=(--pg-max-open "$((budget - 1))" --pg-shared-max-open 1) ;;
      # What the other three instances' floors leave: B - 3.
      floors) pools=(--pg-max-open "$((budget - 4))" --pg-shared-max-open 1) ;;
      fleet)
        n=4
        pools=(--pg-max-open "$budget" --pg-shared-max-open 1
          --fleet "$fleet" --pg-fleet-budget "$budget" --fleet-lease-ttl "$ttl_ms") ;;
    esac
    apps=()
    ports=()
    for i in $(seq 1 "$n"); do
      # Below the ephemeral range (32768-60999), where the pools' and the
      # generator's own sockets could hold the port.
      port=$((20000 + RANDOM % 12000))
      target/release/examples/hello --listen 127.0.0.1:$port --workers 1 --no-pin \
        --pg "$pg" "${pools[@]}" > /dev/null 2>&1 &
      apps+=($!)
      ports+=("$port")
    done
    for port in "${ports[@]}"; do
      until curl -sf "http://127.0.0.1:$port/health" > /dev/null; do
        sleep 0.1
        for p in "${apps[@]}"; do
          kill -0 "$p" 2> /dev/null || { echo "an instance exited at start (port $port?)" >&2; exit 1; }
        done
      done
      [ "$setup" = fleet ] || continue
      until [ "$(metric "$port" "tidepool_fleet_instances{fleet=\"$fleet\"}")" = "$n" ] \
        && [ -n "$(metric "$port" "tidepool_fleet_lease{fleet=\"$fleet\"}")" ] \
        && [ "$(metric "$port" "tidepool_fleet_lease{fleet=\"$fleet\"}")" != "0" ]; do
        sleep 0.1
      done
    done
    port=${ports[0]}
    for rate in $rates; do
      run() { # seconds out
        target/release/tidepool-loadgen run --target "http://127.0.0.1:$port" \
          --rate "$rate" --duration "$1" --poisson --seed "$round" \
          --path "/db/sleep?ms=20" --connections 256 --timeout 5s --quiet --no-metrics \
          --out "$2" > /dev/null 2>&1
      }
      run "$((ttl_ms * 2))ms" "$out/settle"
      metric "$port" 'tidepool_pool_acquire_wait_seconds{pool="pg",quantile="0.99"}' > /dev/null
      lease=$(metric "$port" 'tidepool_pool_max_open{pool="pg"}')
      run "${secs}s" "$out/r$round-$setup-$rate"
      wait_p99=$(metric "$port" 'tidepool_pool_acquire_wait_seconds{pool="pg",quantile="0.99"}')
      echo "$round $setup $rate $lease $wait_p99" >> "$out/rows"
      echo "round $round, $setup, $rate req/s: /db max_open $lease, acquire-wait p99 ${wait_p99}s" >&2
    done
    for p in "${apps[@]}"; do kill "$p"; wait "$p" 2>/dev/null; done
    apps=()
  done
done

python3 - "$out" "$budget" "$rates" <<'PY'
import json, os, statistics, sys
out, budget, rates = sys.argv[1], int(sys.argv[2]), [int(r) for r in sys.argv[3].split()]
rows = {}
for line in open(os.path.join(out, "rows")):
    rnd, setup, rate, max_open, wait = line.split()
    s = json.load(open(os.path.join(out, f"r{rnd}-{setup}-{rate}", "summary.json")))
    rows[(int(rnd), setup, int(rate))] = (float(max_open or 0), float(wait or 0) * 1e3, s["latency"]["p99_ms"], s["errors"])
rounds = sorted({k[0] for k in rows})
setups = ("alone", "floors", "fleet")
print(f"budget {budget}; the loaded one of 4 instances (fleet) against one instance owning all of it (alone)")
print(f"and one owning what the others' floors leave, {budget - 3} (floors); /db/sleep?ms=20, Poisson arrivals;")
print("per round alone/floors/fleet; ratios are medians of the rounds' fleet/alone and fleet/floors")
med = lambda v: statistics.median(v) if v else float("nan")
def ratio(a, b):
    if a == 0 and b == 0:
        return 1.0
    return b / a if a > 0 else float("inf")
for what, col in (("/db max_open at the window's start", 0), ("acquire-wait p99 ms", 1), ("request p99 ms", 2)):
    print(f"\n{what}")
    print(f"{'rate':>6} {'busy':>5}   {'rounds':<40} {'vs alone':>9} {'vs floors':>9}")
    for rate in rates:
        cells, ra, rf = [], [], []
        for r in rounds:
            v = [rows.get((r, x, rate)) for x in setups]
            if None in v:
                continue
            cells.append("/".join(f"{x[col]:.1f}" for x in v))
            ra.append(ratio(v[0][col], v[2][col]))
            rf.append(ratio(v[1][col], v[2][col]))
        print(f"{rate:>6} {rate * 0.02:>5.1f}   {' '.join(cells):<40} {med(ra):>8.2f}x {med(rf):>8.2f}x")
errors = sum(v[3] for v in rows.values())
print(f"\nerrors (all runs): {errors}")
PY
