#!/usr/bin/env bash
# Benchmark: how fast the reference server answers READs, through nbdcopy (libnbd) into null:,
# with extents ignored so every byte is read. Prints wall time (best of N) and MiB/s for a few
# request shapes: nbdcopy's default (4 connections, 256 KiB requests, 64 in flight each) and one
# connection of 32 MiB requests (the largest payload the server takes). Not a test: timings
# depend on the machine; compare two builds (BIN) in the same run.
#
#   benches/reference-read.sh [SIZE_MIB] [RUNS] [BIN]    (defaults: 2048, 5, target/release)
#
# Needs nbdcopy (libnbd-bin) and GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-2048}
runs=${2:-5}
bin=${3:-}
if [ -z "$bin" ]; then
  cargo build --release -q
  bin=$PWD/target/release/nbd-conform
fi
dir=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

img=$dir/disk.raw
# Data everywhere (no holes to skip), in the page cache before the first run.
head -c "$((size_mib << 20))" /dev/urandom > "$img"
"$bin" serve "$img" --socket "$dir/nbd.sock" 2>"$dir/serve.log" &
pid=$!
for _ in $(seq 200); do [ -S "$dir/nbd.sock" ] && break; sleep 0.05; done
uri="nbd+unix:///?socket=$dir/nbd.sock"

measure() { # prints the best wall time of nbdcopy with these options
  local best=""
  for _ in $(seq "$runs"); do
    /usr/bin/time -f "%e" -o "$dir/t" nbdcopy --no-extents "$@" "$uri" null:
    read -r t < "$dir/t"
    if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t; fi
  done
  echo "$best"
}

echo "image: ${size_mib} MiB of data; client: nbdcopy --no-extents into null:; best of $runs"
for shape in "default" "-C 1 --request-size=33554432 --requests=8"; do
  if [ "$shape" = default ]; then opts=(); else read -r -a opts <<< "$shape"; fi
  t=$(measure "${opts[@]}")
  printf '%-40s %6s s %8s MiB/s\n' "$shape" "$t" \
    "$(awk -v s="$size_mib" -v t="$t" 'BEGIN{ printf "%.0f", s/(t>0?t:0.001) }')"
done
