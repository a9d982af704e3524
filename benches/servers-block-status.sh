#!/usr/bin/env bash
# Benchmark: how fast each server answers block status on the same file, through the same client
# (`nbd-conform map`, base:allocation, the whole export), in the same run. Prints wall time
# (best of N) per server and each one's ratio to our reference server. Not a test: timings
# depend on the machine; the ratios are what to compare (design §9 wants the reference server at
# least as fast as qemu-nbd and nbdkit).
#
#   benches/servers-block-status.sh [SIZE_GIB] [STRIDE_KIB] [RUNS]    (defaults: 4, 128, 5)
#
# The file: a raw sparse image of SIZE_GIB with 4 KiB of data every STRIDE_KIB (so 4 GiB / 128
# KiB gives 32,768 data extents and as many holes). Each server serves it read-only on a private
# Unix socket: `nbd-conform serve`, `qemu-nbd -f raw`, `nbdkit file`. Needs qemu-nbd, nbdkit and
# GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
size_gib=${1:-4}
stride_kib=${2:-128}
runs=${3:-5}
cargo build --release -q
bin=$PWD/target/release/nbd-conform
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

img=$dir/disk.raw
python3 - "$img" "$size_gib" "$stride_kib" <<'EOF'
import sys
path, size_gib, stride_kib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
size, stride, block = size_gib << 30, stride_kib << 10, b"\x5a" * 4096
with open(path, "wb") as f:
    f.truncate(size)
    for offset in range(0, size, stride):
        f.seek(offset)
        f.write(block)
EOF
sync "$img"

start() { # name, then the command; waits for its socket
  local name=$1; shift
  "$@" >"$dir/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do [ -S "$dir/$name.sock" ] && return; sleep 0.05; done
  echo "$name did not come up:" >&2; cat "$dir/$name.log" >&2; exit 1
}
start reference "$bin" serve "$img" --socket "$dir/reference.sock"
start qemu-nbd qemu-nbd -f raw -r -t -e 8 -k "$dir/qemu-nbd.sock" "$img"
start nbdkit nbdkit -f --exit-with-parent -r -U "$dir/nbdkit.sock" file "$img"

measure() { # prints "seconds lines" of the best run
  local best="" lines=""
  for _ in $(seq "$runs"); do
    /usr/bin/time -f "%e" -o "$dir/t" "$bin" map "nbd+unix:///?socket=$1" > "$dir/out"
    read -r t < "$dir/t"
    if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t; fi
    lines=$(wc -l < "$dir/out")
  done
  echo "$best $lines"
}

echo "file: ${size_gib} GiB raw, 4 KiB of data every ${stride_kib} KiB; client: nbd-conform map; best of $runs"
read -r ref_t ref_n < <(measure "$dir/reference.sock")
printf '%-12s %8s s %9s descriptors\n' reference "$ref_t" "$ref_n"
for name in qemu-nbd nbdkit; do
  read -r t n < <(measure "$dir/$name.sock")
  printf '%-12s %8s s %9s descriptors   reference/%s time ratio: %s\n' "$name" "$t" "$n" "$name" \
    "$(awk -v a="$ref_t" -v b="$t" 'BEGIN{ printf "%.2f", (a>0?a:0.001)/(b>0?b:0.001) }')"
done
