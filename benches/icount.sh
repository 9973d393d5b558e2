#!/usr/bin/env bash
# Instructions per operation of fixed in-process workloads (examples/icount.rs),
# counted by valgrind's callgrind, which does not drift with a noisy machine:
# each workload runs twice (1,000 and 11,000 iterations) and the difference
# is divided by 10,000, so start-up cost cancels. Compared with the committed
# baseline (benches/icount-baseline.txt); a workload more than 3% above it
# fails. `--update` rewrites the baseline (after a change that is meant to
# cost, or a toolchain update; say why in the commit).
#
# usage: benches/icount.sh [--update]
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=benches/icount-baseline.txt
update=${1:-}
command -v valgrind >/dev/null || { echo "icount: valgrind is not installed" >&2; exit 1; }
# Counts compare only under the same compiler, valgrind and CPU features
# (memchr and friends pick code paths by CPUID): the baseline records them,
# and a baseline from elsewhere is reported, not compared.
fingerprint="$(rustc -V) | $(valgrind --version) | cpu flags $(grep -m1 '^flags' /proc/cpuinfo | md5sum | cut -c1-12)"
cargo build --profile icount --example icount
bin=target/icount/examples/icount
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
count() { # workload iterations -> total instructions
  valgrind --tool=callgrind --callgrind-out-file="$tmp/out" "$bin" "$1" "$2" >/dev/null 2>&1
  awk '/^(summary|totals):/ {print $2; exit}' "$tmp/out"
}
status=0
printf '%-12s %12s %12s %8s\n' workload instr/op baseline ratio
new=""
for w in techempower browser datarow; do
  a=$(count "$w" 1000)
  b=$(count "$w" 11000)
  per=$(( (b - a) / 10000 ))
  new+="$w $per"$'\n'
  base=""
  if [ "$(sed -n 's/^# fingerprint: //p' "$baseline" 2>/dev/null)" = "$fingerprint" ]; then
    base=$(awk -v w="$w" '$1 == w {print $2}' "$baseline")
  fi
  if [ -z "$base" ]; then
    printf '%-12s %12d %12s %8s\n' "$w" "$per" - -
    continue
  fi
  ratio=$(awk -v a="$per" -v b="$base" 'BEGIN {printf "%.3f", a / b}')
  printf '%-12s %12d %12d %8s\n' "$w" "$per" "$base" "$ratio"
  if awk -v r="$ratio" 'BEGIN {exit !(r > 1.03)}'; then
    echo "icount: $w costs ${ratio}x its baseline (more than 3% above)" >&2
    status=1
  fi
done
if [ "$update" = "--update" ]; then
  printf '# fingerprint: %s\n%s' "$fingerprint" "$new" > "$baseline"
  echo "baseline written to $baseline"
  exit 0
fi
if [ "$(sed -n 's/^# fingerprint: //p' "$baseline" 2>/dev/null)" != "$fingerprint" ]; then
  echo "icount: the baseline was counted under another toolchain or CPU; not compared"
  echo "        (here: $fingerprint; --update records this machine's counts)"
fi
exit $status
