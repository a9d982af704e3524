#!/usr/bin/env bash
# Benchmark: `nbd-conform map` against `nbdinfo --map` on the same server, in the same run.
# Prints wall time (best of N) and peak RSS for both, and the ratios. Not a test: timings
# depend on the machine; the ratio is what to compare.
#
#   benches/map-vs-nbdinfo.sh [SIZE] [RUNS]      (defaults: 64G, 5)
#
# The server is nbdkit's sparse-random plugin (a deterministic sparse disk with many extents)
# on a private Unix socket. Needs nbdkit, nbdinfo (libnbd-bin) and GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-64G}
runs=${2:-5}
cargo build --release -q
bin=target/release/nbd-conform
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
sock=$dir/nbd.sock
nbdkit -f --exit-with-parent -U "$sock" sparse-random "$size" seed=1 percent=5 runlength=65536 &
pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
uri="nbd+unix:///?socket=$sock"

measure() { # prints "seconds maxrss_kb lines" of the best run
  local best="" rss="" lines=""
  for _ in $(seq "$runs"); do
    /usr/bin/time -f "%e %M" -o "$dir/t" "$@" > "$dir/out"
    read -r t m < "$dir/t"
    if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t; rss=$m; fi
    lines=$(wc -l < "$dir/out")
  done
  echo "$best $rss $lines"
}

read -r ours_t ours_m ours_n < <(measure "$bin" map "$uri")
read -r theirs_t theirs_m theirs_n < <(measure nbdinfo --map "$uri")
echo "export: nbdkit sparse-random $size (seed=1 percent=5 runlength=65536), best of $runs"
printf '%-28s %8s s %10s KiB %10s lines\n' "nbd-conform map" "$ours_t" "$ours_m" "$ours_n"
printf '%-28s %8s s %10s KiB %10s lines (coalesced)\n' "nbdinfo --map" "$theirs_t" "$theirs_m" "$theirs_n"
awk -v a="$ours_t" -v b="$theirs_t" -v c="$ours_m" -v d="$theirs_m" \
  'BEGIN{ printf "time ratio (ours/nbdinfo): %.2f   peak RSS ratio: %.2f\n", (a>0?a:0.001)/(b>0?b:0.001), c/d }'
