#!/usr/bin/python3
"""Write the seeds of the client_sequence fuzz target (see docs/fuzzing.md).

Each seed is a selector byte (which exchange: 0 STRUCTURED_REPLY, 1 LIST_META_CONTEXT,
2 SET_META_CONTEXT, 3 INFO, 4 GO, 5-7 three requests after a correct handshake, bit 3 with
extended headers) and one cycle of server messages, which the target's fake server repeats
forever. One seed per endless behaviour of issue 10 section 1, plus cycles that end the
exchange at once. Re-run from anywhere: `scripts/fuzz-sequence-seeds.py` (replaces the corpus).
"""

import os
import struct

OPTION_REPLY = 0x0003E889045565A9
STRUCTURED = 0x668E33EF
EXTENDED = 0x6E8A278C
SIMPLE = 0x67446698
COOKIE = 0xC0FFEE0000000000 + 1  # the client's first cookie
DONE = 1
OPT = {"STRUCTURED_REPLY": 8, "LIST_META_CONTEXT": 9, "SET_META_CONTEXT": 10, "INFO": 6, "GO": 7}
ACK, INFO, META_CONTEXT = 1, 3, 4


def option_reply(opt, kind, data=b""):
    return struct.pack(">QIII", OPTION_REPLY, OPT[opt], kind, len(data)) + data


def meta_context(ctx_id, name):
    return struct.pack(">I", ctx_id) + name.encode()


def info_export(size=1 << 20, flags=1):
    return struct.pack(">HQH", 0, size, flags)


def chunk(kind, payload, cookie=COOKIE, flags=DONE):
    return struct.pack(">IHHQI", STRUCTURED, flags, kind, cookie, len(payload)) + payload


def extended_chunk(kind, payload, cookie=COOKIE, flags=DONE, offset=0):
    return struct.pack(">IHHQQQ", EXTENDED, flags, kind, cookie, offset, len(payload)) + payload


def status(descriptors, ctx_id=1):
    return struct.pack(">I", ctx_id) + b"".join(struct.pack(">II", n, f) for n, f in descriptors)


def status_ext(descriptors, ctx_id=1):
    body = struct.pack(">II", ctx_id, len(descriptors))
    return body + b"".join(struct.pack(">QQ", n, f) for n, f in descriptors)


SEEDS = {
    # The option phase.
    "sr-info-forever": (0, option_reply("STRUCTURED_REPLY", INFO, info_export())),
    "sr-ack": (0, option_reply("STRUCTURED_REPLY", ACK)),
    "list-contexts-forever": (
        1,
        option_reply("LIST_META_CONTEXT", META_CONTEXT, meta_context(0, "base:allocation")),
    ),
    "set-unrequested-contexts-forever": (
        2,
        option_reply("SET_META_CONTEXT", META_CONTEXT, meta_context(2, "x-hostile:ctx")),
    ),
    "set-selected-then-ack": (
        2,
        option_reply("SET_META_CONTEXT", META_CONTEXT, meta_context(1, "base:allocation"))
        + option_reply("SET_META_CONTEXT", ACK),
    ),
    "info-export-forever": (3, option_reply("INFO", INFO, info_export())),
    "go-export-then-ack": (4, option_reply("GO", INFO, info_export()) + option_reply("GO", ACK)),
    # Transmission: replies to block status (cookie +1), READ (+2), block status (+3).
    "status-without-done-forever": (5, chunk(5, status([(65536, 0)]), flags=0)),
    "status-reply-repeated": (5, chunk(5, status([(65536, 0)]))),
    "chunks-for-a-cookie-never-sent": (5, chunk(5, status([(65536, 0)]), cookie=COOKIE + 99)),
    "descriptors-by-the-thousand-without-done": (
        5,
        chunk(5, status([(64, 0)] * 1024), flags=0),
    ),
    "three-replies": (
        5,
        chunk(5, status([(65536, 0)]))
        + chunk(1, struct.pack(">Q", 0) + bytes(4096), cookie=COOKIE + 1)
        + chunk(5, status([(65536, 0)]), cookie=COOKIE + 2),
    ),
    "read-holes-without-done-forever": (
        5,
        chunk(2, struct.pack(">QI", 0, 1), cookie=COOKIE + 1, flags=0),
    ),
    "simple-replies-repeated": (5, struct.pack(">IIQ", SIMPLE, 0, COOKIE)),
    "extended-status-without-done-forever": (
        13,
        extended_chunk(6, status_ext([(65536, 0)]), flags=0),
    ),
    "extended-status-repeated": (13, extended_chunk(6, status_ext([(65536, 0)]))),
}


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    corpus = os.path.join(root, "fuzz", "corpus", "client_sequence")
    os.makedirs(corpus, exist_ok=True)
    for old in os.listdir(corpus):
        os.remove(os.path.join(corpus, old))
    for name, (selector, cycle) in SEEDS.items():
        with open(os.path.join(corpus, name), "wb") as f:
            f.write(bytes([selector]) + cycle)
    print(f"{len(SEEDS)} seeds in {corpus}")


if __name__ == "__main__":
    main()
