#!/usr/bin/python3
"""Reference mapper: the same walk as `nbd-conform map`, done with libnbd's block_status.

The interop tests compare its output with `nbd-conform map --json` entry by entry. It follows the
same rules as src/map.rs (fixed windows; inside a window the next request starts where the
slowest context stopped; descriptors clipped to the window; parts already reported are not
repeated), so any difference is a difference in how the two clients decode the server's replies.
Prints one JSON object per line: context, offset, length, flags.
"""
import argparse
import json
import sys

import nbd


def main():
    p = argparse.ArgumentParser()
    p.add_argument("uri")
    p.add_argument("--context", action="append", default=[])
    p.add_argument("--window", type=int, default=1 << 30)
    p.add_argument("--req-one", action="store_true")
    args = p.parse_args()
    contexts = args.context or ["base:allocation"]

    h = nbd.NBD()
    for c in contexts:
        h.add_meta_context(c)
    h.connect_uri(args.uri)
    for c in contexts:
        if not h.can_meta_context(c):
            sys.exit("server did not select context %s" % c)
    size = h.get_size()
    flags = nbd.CMD_FLAG_REQ_ONE if args.req_one else 0
    out = sys.stdout
    start = 0
    while start < size:
        end = min(start + args.window, size)
        covered = {c: start for c in contexts}
        entries = {c: [] for c in contexts}
        while min(covered.values()) < end:
            asked = min(covered.values())

            def extent(ctx, offset, pairs, err):
                if ctx not in covered:
                    return 0
                at = offset
                for i in range(0, len(pairs), 2):
                    length, status = pairs[i], pairs[i + 1]
                    lo = max(at, covered[ctx])
                    hi = min(at + length, end)
                    if lo < hi and lo == covered[ctx]:
                        entries[ctx].append((lo, hi - lo, status))
                        covered[ctx] = hi
                    at += length
                    if at >= end:
                        break
                return 0

            h.block_status(end - asked, asked, extent, flags)
            if min(covered.values()) <= asked:
                sys.exit("no progress at %d" % asked)
        for c in contexts:
            for (off, length, status) in entries[c]:
                out.write(json.dumps({"context": c, "offset": off, "length": length, "flags": status}) + "\n")
        start = end
    h.shutdown()


if __name__ == "__main__":
    main()
