#!/usr/bin/env bash
# The generator's own capacity, beside wrk, in the same run.
#
# Both clients get one pinned core (GEN_CPU), 64 keep-alive connections,
# no pipelining, as fast as they can go (tidepool-loadgen --rate max),
# against the example server pinned to another core (SRV_CPU):
#
#   target/release/examples/hello --listen 127.0.0.1:18085 --workers 1
#
# Rounds alternate wrk and tidepool-loadgen. For each we print requests/s
# and the client's CPU time per request (user + sys, from /usr/bin/time).
# When the server is the bottleneck, a client's requests/s says little
# about the client, so the capacity compared is requests per client
# CPU-second ("req/s per core"): what one core of that client would
# sustain. The raw requests/s ratio is printed as well.
#
# Env: SKIP_BUILD=1 uses the binaries already built; DUR (s, default 10), ROUNDS (3), PORT (18085), GEN_CPU (0), SRV_CPU (1),
#      MAX_LOAD (1.5): wait while the 1-min load average is above it,
#      WAIT_TRIES (10) × 30 s at most, then run anyway and say so.
set -euo pipefail
cd "$(dirname "$0")/.."

DUR=${DUR:-10}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-18085}
GEN_CPU=${GEN_CPU:-0}
SRV_CPU=${SRV_CPU:-1}
MAX_LOAD=${MAX_LOAD:-1.5}
WAIT_TRIES=${WAIT_TRIES:-10}
URL="http://127.0.0.1:${PORT}/plaintext"

command -v wrk >/dev/null || { echo "bench: wrk is not installed (apt-get install wrk)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is needed (apt-get install time)" >&2; exit 2; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --example hello -q
  cargo build --release -p tidepool-loadgen -q
fi
LOADGEN=target/release/tidepool-loadgen
HELLO=target/release/examples/hello

quiet=yes
for i in $(seq 1 "$WAIT_TRIES"); do
  load=$(cut -d' ' -f1 /proc/loadavg)
  if awk -v l="$load" -v m="$MAX_LOAD" 'BEGIN { exit !(l <= m) }'; then quiet=yes; break; fi
  quiet=no
  echo "bench: load average $load > $MAX_LOAD; waiting 30 s ($i/$WAIT_TRIES)" >&2
  sleep 30
done
[ "$quiet" = yes ] || echo "bench: WARNING: the machine is still busy (load $(cut -d' ' -f1 /proc/loadavg)); figures are noisy" >&2

taskset -c "$SRV_CPU" "$HELLO" --listen "127.0.0.1:${PORT}" --workers 1 >/dev/null 2>&1 &
SRV=$!
TMP=$(mktemp -d)
trap 'kill $SRV 2>/dev/null || true; wait $SRV 2>/dev/null || true; rm -rf "$TMP"' EXIT
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null; then break; fi
  sleep 0.05
done

srv_ticks() { awk '{ print $14 + $15 }' "/proc/$SRV/stat"; }
HZ=$(getconf CLK_TCK)

# Warm both the server and the page cache.
taskset -c "$GEN_CPU" wrk -t1 -c64 -d2s "$URL" >/dev/null 2>&1

printf '%-18s %5s %12s %10s %12s %14s %10s\n' client round "req/s" "cpu s" "cpu us/req" "req/s per core" "server cpu"
declare -a WRK_RPS WRK_PC LG_RPS LG_PC
for r in $(seq 1 "$ROUNDS"); do
  s0=$(srv_ticks)
  out=$( { /usr/bin/time -f "TIME %U %S" taskset -c "$GEN_CPU" wrk -t1 -c64 -d"${DUR}s" "$URL"; } 2>&1 )
  s1=$(srv_ticks)
  reqs=$(sed -n 's/^ *\([0-9]\+\) requests in.*/\1/p' <<<"$out")
  cpu=$(awk '/^TIME/ { print $2 + $3 }' <<<"$out")
  line=$(awk -v n="$reqs" -v c="$cpu" -v d="$DUR" -v s="$((s1 - s0))" -v hz="$HZ" 'BEGIN {
      printf "%.0f %.2f %.2f %.0f %.0f%%", n / d, c, c * 1e6 / n, n / c, 100 * s / hz / d }')
  read -r rps c us pc srv <<<"$line"
  printf '%-18s %5s %12s %10s %12s %14s %10s\n' wrk "$r" "$rps" "$c" "$us" "$pc" "$srv"
  WRK_RPS+=("$rps"); WRK_PC+=("$pc")

  s0=$(srv_ticks)
  out=$( { /usr/bin/time -f "TIME %U %S" taskset -c "$GEN_CPU" "$LOADGEN" run --target "http://127.0.0.1:${PORT}" \
      --rate max --duration "${DUR}s" --connections 64 --path /plaintext --cpus "$GEN_CPU" \
      --no-metrics --quiet --out "$TMP/lg$r" >/dev/null; } 2>&1 )
  s1=$(srv_ticks)
  reqs=$(sed -n 's/^ *"completed": \([0-9]\+\),/\1/p' "$TMP/lg$r/summary.json" | head -1)
  cpu=$(awk '/^TIME/ { print $2 + $3 }' <<<"$out")
  line=$(awk -v n="$reqs" -v c="$cpu" -v d="$DUR" -v s="$((s1 - s0))" -v hz="$HZ" 'BEGIN {
      printf "%.0f %.2f %.2f %.0f %.0f%%", n / d, c, c * 1e6 / n, n / c, 100 * s / hz / d }')
  read -r rps c us pc srv <<<"$line"
  printf '%-18s %5s %12s %10s %12s %14s %10s\n' tidepool-loadgen "$r" "$rps" "$c" "$us" "$pc" "$srv"
  LG_RPS+=("$rps"); LG_PC+=("$pc")
done

# Rounds are paired (wrk then tidepool-loadgen, back to back), so the ratio
# within each round is less exposed to the machine's drift than the ratio of medians.
declare -a PAIR
for i in "${!WRK_PC[@]}"; do
  PAIR+=("$(awk -v a="${LG_PC[$i]}" -v b="${WRK_PC[$i]}" 'BEGIN { printf "%.3f", a / b }')")
done

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
wr=$(median "${WRK_RPS[@]}"); wp=$(median "${WRK_PC[@]}")
lr=$(median "${LG_RPS[@]}"); lp=$(median "${LG_PC[@]}")
echo
printf 'median wrk:              %10.0f req/s  %10.0f req/s per core\n' "$wr" "$wp"
printf 'median tidepool-loadgen: %10.0f req/s  %10.0f req/s per core\n' "$lr" "$lp"
awk -v a="$lp" -v b="$wp" -v c="$lr" -v d="$wr" 'BEGIN {
  printf "ratio (loadgen / wrk):   %10.2fx per core   %10.2fx raw req/s   (target: >= 1.5x per core)\n", a / b, c / d }'
echo "per-round ratios (per core): ${PAIR[*]}; median $(median "${PAIR[@]}")x"
