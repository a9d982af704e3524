#!/usr/bin/env python3
"""Hostile clients against `nbd-conform serve`, with a well-behaved client timed alongside.

Not a test (tests/conformance/serve_attacks.rs is): a probe that prints numbers, for comparing
builds or settings. It starts the server itself on a private Unix socket, runs one attack, and
every PROBE_EVERY seconds opens a well-behaved client (handshake, SET_META_CONTEXT
base:allocation, GO, one BLOCK_STATUS and one 4 KiB READ), then prints the probes' latencies
and the server's peak RSS (VmHWM) and its count of log lines.

    scripts/serve-attacks.py BIN ATTACK [--count N] [--seconds S] [--nofile N] [-- SERVE-ARGS]

ATTACK: handshake (N connections that never negotiate), partial-writes (N connections each
sending a 32 MiB WRITE to the read-only export, all but its last byte), reads (N connections
each pipelining 8 READs of 32 MiB without reading a reply).
"""

import argparse
import os
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

MIB = 1 << 20
OPT_MAGIC = b"IHAVEOPT"
OPT_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
STRUCTURED_MAGIC = 0x668E33EF
OPT_GO, OPT_STRUCTURED_REPLY, OPT_SET_META_CONTEXT = 7, 8, 10
REP_ACK = 1
CMD_READ, CMD_WRITE, CMD_BLOCK_STATUS = 0, 1, 7
DONE = 1


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def option(s, opt, data):
    s.sendall(OPT_MAGIC + struct.pack(">II", opt, len(data)) + data)
    while True:
        magic, _, rtype, length = struct.unpack(">QIII", recv_exact(s, 20))
        assert magic == OPT_REPLY_MAGIC, hex(magic)
        recv_exact(s, length)
        if rtype == REP_ACK or rtype & 0x80000000:
            return rtype


def negotiate(s, contexts=True):
    greeting = recv_exact(s, 18)
    assert greeting[:16] == b"NBDMAGICIHAVEOPT", greeting
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    option(s, OPT_STRUCTURED_REPLY, b"")
    if contexts:
        query = b"base:allocation"
        data = struct.pack(">I", 0) + struct.pack(">I", 1) + struct.pack(">I", len(query)) + query
        option(s, OPT_SET_META_CONTEXT, data)
    option(s, OPT_GO, struct.pack(">IH", 0, 0))


def request(command, cookie, offset, length, flags=0):
    return struct.pack(">IHHQQI", REQUEST_MAGIC, flags, command, cookie, offset, length)


def structured_reply(s):
    """Reads chunks until DONE; returns the last chunk's type."""
    while True:
        magic = struct.unpack(">I", recv_exact(s, 4))[0]
        if magic == SIMPLE_MAGIC:
            recv_exact(s, 12)
            return "simple"
        assert magic == STRUCTURED_MAGIC, hex(magic)
        flags, ctype, _, length = struct.unpack(">HHQI", recv_exact(s, 16))
        recv_exact(s, length)
        if flags & DONE:
            return ctype


def well_behaved(path, timeout):
    """Seconds from connect to the READ's reply, or None when it failed or took too long."""
    start = time.monotonic()
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(path)
            negotiate(s)
            s.sendall(request(CMD_BLOCK_STATUS, 1, 0, 1 * MIB))
            structured_reply(s)
            s.sendall(request(CMD_READ, 2, 0, 4096))
            structured_reply(s)
    except Exception as e:  # noqa: BLE001 - a probe reports any failure as a number
        return None, str(e)
    return time.monotonic() - start, None


def vm_hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def attack_handshake(path, count, held):
    for _ in range(count):
        try:
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            s.connect_ex(path)
            held.append(s)
        except OSError:
            break


def attack_partial_writes(path, count, held):
    payload = b"\xab" * (32 * MIB - 1)
    for i in range(count):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(30)
        s.connect(path)
        negotiate(s, contexts=False)
        s.sendall(request(CMD_WRITE, i, 0, 32 * MIB))
        s.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 5
        while sent < len(payload) and time.monotonic() < deadline:
            try:
                sent += s.send(payload[sent:sent + MIB])
            except BlockingIOError:
                time.sleep(0.001)
        held.append(s)


def attack_reads(path, count, held):
    for _ in range(count):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(30)
        s.connect(path)
        negotiate(s, contexts=False)
        s.sendall(b"".join(request(CMD_READ, c, 0, 32 * MIB) for c in range(8)))
        held.append(s)


ATTACKS = {
    "handshake": attack_handshake,
    "partial-writes": attack_partial_writes,
    "reads": attack_reads,
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("bin")
    p.add_argument("attack", choices=ATTACKS)
    p.add_argument("--count", type=int, default=50)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--nofile", type=int, help="the server's descriptor limit")
    p.add_argument("--probe-every", type=float, default=0.5)
    p.add_argument("--probe-timeout", type=float, default=10)
    p.add_argument("--image-mib", type=int, default=64)
    argv = sys.argv[1:]
    serve_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.serve_args = serve_args
    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))

    with tempfile.TemporaryDirectory() as tmp:
        image = os.path.join(tmp, "disk.raw")
        with open(image, "wb") as f:
            f.truncate(args.image_mib * MIB)
            f.write(b"\x5a" * MIB)
        path = os.path.join(tmp, "nbd.sock")
        log = open(os.path.join(tmp, "serve.log"), "w+")

        def limit():
            if args.nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, args.nofile))

        server = subprocess.Popen(
            [args.bin, "serve", image, "--socket", path, *args.serve_args],
            stderr=log, preexec_fn=limit)
        try:
            for _ in range(200):
                if os.path.exists(path):
                    break
                time.sleep(0.05)
            base, err = well_behaved(path, 5)
            assert base is not None, err
            held = []
            started = time.monotonic()
            attacker = threading.Thread(
                target=ATTACKS[args.attack], args=(path, args.count, held), daemon=True)
            attacker.start()
            probes = []
            while time.monotonic() - started < args.seconds:
                probes.append(well_behaved(path, args.probe_timeout))
                time.sleep(args.probe_every)
            attacker.join(timeout=60)
            hwm = vm_hwm(server.pid)
            for s in held:
                s.close()
        finally:
            server.terminate()
            server.wait(timeout=10)
        log.seek(0)
        lines = log.read().splitlines()

    ok = [t for t, _ in probes if t is not None]
    failed = [e for t, e in probes if t is None]
    print(f"attack {args.attack} x{args.count}: {len(held)} attacker connections held")
    print(f"probes: {len(probes)}, answered {len(ok)}, failed {len(failed)}"
          + (f" (first: {failed[0]})" if failed else ""))
    if ok:
        print(f"latency: max {max(ok):.3f} s, median {sorted(ok)[len(ok) // 2]:.3f} s,"
              f" over 1 s: {sum(t > 1 for t in ok)}")
    print(f"server VmHWM: {hwm / MIB:.0f} MiB; log lines: {len(lines)}")
    for line in lines[:3] + (["..."] if len(lines) > 6 else []) + lines[max(3, len(lines) - 3):]:
        print("  " + line)


if __name__ == "__main__":
    sys.exit(main())
