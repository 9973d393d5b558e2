#!/usr/bin/env bash
# The pool's acquire queue under overload: the example's /db/sleep?ms=20
# through a pool of 4 PostgreSQL connections (capacity 200 req/s), open
# loop at 0.5x, 1x, 2x and 3x of it, requests split between the critical,
# default and sheddable classes (MIX below); the FIFO queue and the adaptive
# one in the same run, alternating. Prints, per mode and rate: successes
# per second, goodput (successes within 200 ms of their intended send, per
# second), 503s (shed or timed out), each class's p50/p99 latency, and
# how long the 503s took (p50/p99, all classes: a shed should be fast),
# and, as the floor for that, how fast a sixth more requests to /plaintext
# (no database) are answered in the same run.
#
# usage: benches/compare-overload.sh [SECONDS per step, default 10] [MIX]
#   MIX: the critical:default:sheddable weights, default 1:2:2 (a fifth of
#   the requests critical: at 3x their demand alone is 0.6x the pool's
#   capacity; with 1:1:1 it is all of it, and no discipline can then keep
#   critical requests at their unloaded latency)
# FACTORS="2 3" runs only those loads.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
IFS=: read -r w_critical w_default w_sheddable <<< "${2:-1:2:2}"
scripts/ensure-deps.sh
cargo build --release --quiet --example hello
cargo build --release --quiet -p tidepool-loadgen -p tidepool-benches --bin dbservers
out=$(mktemp -d)
mkfifo "$out/hold"
target/release/dbservers < "$out/hold" > "$out/urls" &
dbs=$!
exec 3> "$out/hold"
trap 'exec 3>&-; wait $dbs 2>/dev/null; rm -rf "$out"' EXIT
while ! grep -q '^PG=' "$out/urls" 2>/dev/null; do sleep 0.1; done
pg=$(sed -n 's/^PG=//p' "$out/urls")
# Below the ephemeral range (32768-60999), where sockets could hold it.
port=$((20000 + RANDOM % 12000))
factors=${FACTORS:-0.5 1 2 3}
for factor in $factors; do
  rate=$(python3 -c "print(int(200*$factor))")
  # A sixth more requests, to a route without the database: how fast this
  # machine answers anything at that moment (the floor for a shed's 503).
  total=$(python3 -c "print(int(200*$factor*(1 + 1/($w_critical+$w_default+$w_sheddable))))")
  for mode in fifo adaptive; do
    TIDEPOOL_POOLS__PG__QUEUE__MODE=$mode TIDEPOOL_POOLS__PG__ACQUIRE_TIMEOUT=1s \
      target/release/examples/hello --listen 127.0.0.1:$port --workers 1 --no-pin \
      --pg "$pg" --pg-max-open 4 > /dev/null 2>&1 &
    app=$!
    until curl -sf "http://127.0.0.1:$port/health" > /dev/null; do sleep 0.1; done
    cat > "$out/pattern.toml" <<EOF
seed = 11
[[class]]
name = "critical"
path = "/db/sleep?ms=20&class=critical"
weight = $w_critical
[[class]]
name = "default"
path = "/db/sleep?ms=20&class=default"
weight = $w_default
[[class]]
name = "sheddable"
path = "/db/sleep?ms=20&class=sheddable"
weight = $w_sheddable
[[class]]
name = "floor"
path = "/plaintext"
weight = 1
[[phase]]
kind = "steady"
rate = $total
duration = "${secs}s"
EOF
    target/release/tidepool-loadgen run --target "http://127.0.0.1:$port" --pattern "$out/pattern.toml" \
      --connections 256 --timeout 5s --quiet --no-metrics \
      --out "$out/$mode-$factor" > /dev/null 2>&1 || true
    kill $app; wait $app 2>/dev/null || true
  done
done
python3 - "$out" "$secs" $factors <<'PY'
import json, sys, os
out, secs = sys.argv[1], float(sys.argv[2])
tails = {}
print(f"{'load':>5} {'mode':>9} {'ok/s':>7} {'good/s':>7} {'5xx':>6}   " + "   ".join(f"{c:>9} p50/p99 ms" for c in ("critical", "default", "sheddable")) + "   503s p50/p99 ms (default, sheddable)")
for f in sys.argv[3:]:
    for mode in ("fifo", "adaptive"):
        p = os.path.join(out, f"{mode}-{f}", "summary.json")
        if not os.path.exists(p):
            print(f"{f:>5} {mode:>9}   (no result)"); continue
        s = json.load(open(p))
        cls = s["classes"]
        # The database's classes only (not the floor's /plaintext).
        db = [cls[c] for c in ("critical", "default", "sheddable")]
        ok = sum(c["completed"] - c["errors"] for c in db) / secs
        good = sum(c["goodput_rps"] for c in db)
        fives = sum(c["unavailable"] for c in db)
        cols = []
        for c in ("critical", "default", "sheddable"):
            l = cls[c]["latency"]
            cols.append(f"{l['p50_ms']:>8.1f}/{l['p99_ms']:<8.1f}")
        sheds = []
        for c in ("default", "sheddable"):
            u = cls[c].get("unavailable_latency", {})
            sheds.append(f"{u.get('p50_ms', 0):.1f}/{u.get('p99_ms', 0):.1f}" if cls[c].get("unavailable", 0) else "-")
            if cls[c].get("unavailable", 0):
                tails[(f, mode, c)] = (cls[c]["unavailable"], u)
        print(f"{f+'x':>5} {mode:>9} {ok:>7.1f} {good:>7.1f} {fives:>6}   " + "   ".join(f"{c:>20}" for c in cols) + "   " + ", ".join(sheds))
print()
print("503s in detail (count; p50 / p90 / p99 / p99.9 / max ms), and the floor:")
print("GET /plaintext in the same run, all of whose answers are that fast:")
for (f, mode, c), (n, u) in tails.items():
    print(f"{f+'x':>5} {mode:>9} {c:>9} {n:>6}; " + " / ".join(f"{u.get(k, 0):.2f}" for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms")))
for f in sys.argv[3:]:
    for mode in ("fifo", "adaptive"):
        p = os.path.join(out, f"{mode}-{f}", "summary.json")
        if os.path.exists(p):
            fl = json.load(open(p))["classes"].get("floor")
            if fl:
                u = fl["latency"]
                print(f"{f+'x':>5} {mode:>9} {'floor':>9} {fl['latency']['count']:>6}; " + " / ".join(f"{u.get(k, 0):.2f}" for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms")))
PY
