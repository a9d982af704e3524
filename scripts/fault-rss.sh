#!/usr/bin/env bash
# Peak RSS and wall time of the harness (`nbd-conform run --target`) against the reference
# server with each hostile fault (docs/faults.md, "Memory against hostile servers").
#
# Usage (from the crate root): scripts/fault-rss.sh
# Prints one Markdown table row per run.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
bin=target/release/nbd-conform
work=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Standard cases: a sparse 4 GiB + 1 MiB export with a little data and a dirty bitmap (big
# enough for the cases written for big-hole-4g). Draft cases: 4 MiB, no bitmap (so that GET_DIRTY
# gets the fallback the draft cases expect there).
standard=$work/standard.img
draft=$work/draft.img
truncate -s 4097M "$standard"
truncate -s 4M "$draft"
for image in "$standard" "$draft"; do
  printf 'data at 0' | dd of="$image" conv=notrunc status=none
  printf 'data at 2M' | dd of="$image" bs=1M seek=2 conv=notrunc status=none
done

# measure DIALECT FAULT...: one run against `serve --fault FAULT` (no fault: the clean server).
measure() {
  local dialect=$1
  shift
  local socket=$work/nbd.sock fault_args=() f
  for f in "$@"; do fault_args+=(--fault "$f"); done
  rm -f "$socket"
  if [ "$dialect" = standard ]; then
    "$bin" serve "$standard" --socket "$socket" --export conform --bitmap bm0 \
      ${fault_args[@]+"${fault_args[@]}"} 2>/dev/null &
  else
    "$bin" serve "$draft" --socket "$socket" --export conform --dialect draft \
      ${fault_args[@]+"${fault_args[@]}"} 2>/dev/null &
  fi
  server=$!
  for _ in $(seq 100); do [ -S "$socket" ] && break; sleep 0.05; done
  local code=0
  /usr/bin/time -v -o "$work/time" "$bin" run --target "nbd+unix:///conform?socket=$socket" \
    --dialect "$dialect" --timeout 1 --json "$work/report.json" >/dev/null 2>&1 || code=$?
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  server=""
  local rss wall grades
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time")
  grades=$(python3 -c '
import json, sys, collections
r = json.load(open(sys.argv[1]))
c = collections.Counter(case["grade"] for t in r["targets"] for case in t["cases"])
print(", ".join(f"{n} {g}" for g, n in sorted(c.items())))' "$work/report.json")
  printf '| %s | %s | %s MiB | %s | %s | %s |\n' "${*:-(none)}" "$dialect" \
    "$(awk -v k="$rss" 'BEGIN {printf "%.1f", k / 1024}')" "$wall" "$code" "$grades"
}

echo "| Fault | Dialect | Peak RSS | Wall | Exit | Grades |"
echo "|---|---|---|---|---|---|"
measure standard
measure draft
for fault in hang drip garbage-after-handshake; do
  measure standard "$fault"
  measure draft "$fault"
done
measure standard huge-length
measure draft draft-huge-length
measure standard close-mid-reply
