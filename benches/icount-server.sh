#!/usr/bin/env bash
# Instructions per request of the whole example server, counted by
# valgrind's callgrind while wrk drives it closed loop: the server's own
# code, the allocator and libc, on the real I/O backend (callgrind runs the
# io_uring backend too; the kernel's work is not counted). Counting starts
# after a 2 s warm-up (callgrind_control --zero) and ends with a dump, so
# start-up and shutdown are left out. Counts repeat to within a few
# instructions, where wall-clock CPU on this VM drifts by 5-10%; but one
# change can move them by 100 either way through the compiler's inlining
# of the connection's task, so compare builds, not single edits.
#
# usage: benches/icount-server.sh [--io io_uring|epoll] [--connections N]
#                                 [--duration SECS] [--server BIN] [--pipeline]
# --pipeline sends 16 requests per write (as compare_http's pipelined x16).
# --cache also simulates this machine's data caches (48 KiB L1d, 2 MiB L2
# as the last level) and prints L1 data misses per request: what a request
# touches that the kernel's work in between has evicted. With TOP, the
# functions are ranked by those misses instead.
# TOP=N prints the N functions with the most instructions of their own per
# request (callgrind_annotate's flat view puts this dump's whole cost on
# `clone`; its --inclusive=yes tree is right). KEEP=FILE keeps the profile.
set -euo pipefail
cd "$(dirname "$0")/.."
io=io_uring conns=64 secs=8 bin=target/release/examples/hello script=() cache=()
while [ $# -gt 0 ]; do
  case "$1" in
    --io) io=$2; shift 2 ;;
    --connections) conns=$2; shift 2 ;;
    --duration) secs=$2; shift 2 ;;
    --server) bin=$2; shift 2 ;;
    --pipeline) script=(-s benches/pipeline.lua); shift ;;
    --cache) cache=(--cache-sim=yes --D1=49152,12,64 --LL=2097152,16,64); shift ;;
    *) echo "usage: $0 [--io io_uring|epoll] [--connections N] [--duration SECS] [--server BIN] [--pipeline] [--cache]" >&2; exit 2 ;;
  esac
done
for tool in valgrind callgrind_control wrk curl taskset; do
  command -v "$tool" >/dev/null || { echo "icount-server: $tool is not installed" >&2; exit 1; }
done
[ "$bin" != target/release/examples/hello ] || cargo build -q --release --example hello
tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
taskset -c 1 valgrind --tool=callgrind ${cache[@]+"${cache[@]}"} --callgrind-out-file="$tmp/cg.%p" "$bin" \
  --listen "127.0.0.1:$port" --workers 1 --io "$io" >"$tmp/server.log" 2>&1 &
server=$!
# Killed outright (the counts are dumped by then, and a server under
# valgrind can take minutes to shut down); its vgdb pipes go with it.
trap 'kill -9 "$server" 2>/dev/null; wait "$server" 2>/dev/null || true
      rm -rf "$tmp" /tmp/vgdb-pipe-*-"$server"-*' EXIT
# Serving once it answers (under valgrind, start-up takes seconds).
up=""
for _ in $(seq 1 300); do
  curl -s -m 1 -o /dev/null "http://127.0.0.1:$port/plaintext" && { up=1; break; }
  kill -0 "$server" 2>/dev/null || { cat "$tmp/server.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$up" ] || { echo "icount-server: the server never answered" >&2; cat "$tmp/server.log" >&2; exit 1; }
taskset -c 0 wrk -t1 -c"$conns" -d2s ${script[@]+"${script[@]}"} "http://127.0.0.1:$port/plaintext" >/dev/null
callgrind_control --zero "$server" >/dev/null 2>&1
requests=$(taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" ${script[@]+"${script[@]}"} "http://127.0.0.1:$port/plaintext" |
  awk '/requests in/ {print $1}')
callgrind_control --dump "$server" >/dev/null 2>&1
part=$(ls "$tmp"/cg.*.1)
instructions=$(awk '/^(summary|totals):/ {print $2; exit}' "$part")
echo "io $io, $conns connections${script[@]+ pipelined x16}: $requests requests, $instructions instructions, $((instructions / requests)) per request"
# With --cache the events are Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw.
column=1
if [ ${#cache[@]} -gt 0 ]; then
  awk -v n="$requests" '/^(summary|totals):/ {
      printf "L1 data misses per request: %.1f (reads %.1f, writes %.1f); L2 data misses %.2f\n",
        ($6 + $7) / n, $6 / n, $7 / n, ($9 + $10) / n; exit }' "$part"
  column=5
fi
if [ -n "${TOP:-}" ]; then
  # Self cost per function: each `fn=` block's cost lines, minus the line
  # after each `calls=` (the callee's inclusive cost). Names are compressed
  # as "(id) name" on first use and "(id)" after.
  python3 - "$part" "$requests" "$TOP" "$column" <<'PY'
import collections, re, sys
names, cost, fn, skip = {}, collections.Counter(), None, False
for line in open(sys.argv[1]):
    if line.startswith(("fn=", "cfn=")):
        m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
        if m.group(2):
            names[m.group(1)] = m.group(2)
        if line.startswith("fn="):
            fn = names.get(m.group(1), "?")
    elif line.startswith("calls="):
        skip = True
    elif line[:1].isdigit() or line[:1] in "+-*":
        if skip:
            skip = False
        elif fn is not None:
            f = line.split()
            # Instructions, or (with --cache) L1 data read + write misses.
            k = int(sys.argv[4])
            cost[fn] += sum(int(x) for x in f[k:k + (2 if k > 1 else 1)])
for name, c in cost.most_common(int(sys.argv[3])):
    print(f"{c / int(sys.argv[2]):8.1f}  {name[:120]}")
PY
fi
if [ -n "${KEEP:-}" ]; then cp "$part" "$KEEP"; echo "profile kept in $KEEP"; fi
