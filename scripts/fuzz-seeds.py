#!/usr/bin/python3
"""Capture the fuzz seed corpus from real NBD exchanges (see docs/fuzzing.md).

Starts real servers on Unix sockets (qemu-nbd, nbdkit's file and memory plugins, and our own
reference server in both dialects), puts a small recording proxy in front of each, and drives
sessions through the proxy with two kinds of client:

- our own client, running exactly the session the client_stream target fuzzes
  (`fuzz/examples/capture.rs client`, i.e. nbd_conform_fuzz::client_drive), once per plan;
- libnbd: `nbdinfo --map`, `nbdinfo`, `nbdinfo --list`, and short Python-libnbd sessions
  (REQ_ONE block status and reads, with and without structured replies).

The proxy records both directions of every connection. Seeds written (replacing the corpus):

- fuzz/corpus/client_stream/: plan selector byte + server->client bytes of our client's sessions;
- fuzz/corpus/client_decoders/: server->client bytes of the libnbd sessions, plus hand-made
  frames (structured, extended and draft block-status replies, error chunks, read chunks);
- fuzz/corpus/server_options/: client->server bytes from the first byte (flags, options, ...);
- fuzz/corpus/server_requests/: session selector byte + the client->server bytes after the
  handshake (the selector says what the captured handshake negotiated).

Re-run with `scripts/fuzz-seeds.py` from anywhere (it needs qemu-nbd, nbdkit, nbdinfo, Debian's
python3-libnbd, and cargo); `--keep` leaves the raw recordings in the temp dir. The run is
deterministic up to cookies libnbd picks and timing-dependent reply interleaving.
"""

import argparse
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ = os.path.join(ROOT, "fuzz")
CORPUS = os.path.join(FUZZ, "corpus")
CAPTURE_BIN = os.path.join(FUZZ, "target", "debug", "examples", "capture")

# Wire constants (src/wire/consts.rs).
NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OPTION_REPLY = 0x0003E889045565A9
SIMPLE_REPLY = 0x67446698
STRUCTURED_REPLY = 0x668E33EF
EXTENDED_REPLY = 0x6E8A278C
OPT_EXPORT_NAME, OPT_ABORT, OPT_GO = 1, 2, 7
OPT_STRUCTURED_REPLY, OPT_SET_META_CONTEXT, OPT_EXTENDED_HEADERS = 8, 10, 11
REP_ACK, REP_META_CONTEXT, REP_ERROR_BIT = 1, 4, 1 << 31

IMAGE_SIZE = 1 << 20


def log(*args):
    print("fuzz-seeds:", *args, file=sys.stderr, flush=True)


# ---- the recording proxy ------------------------------------------------------------------


class Recorder:
    """Listens on `path`; each connection is forwarded to `upstream` and recorded."""

    def __init__(self, path, upstream):
        self.path, self.upstream = path, upstream
        self.sessions = []  # (c2s bytes, s2c bytes), one per finished connection
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.connect(self.upstream)
        c2s, s2c = bytearray(), bytearray()

        def pump(src, dst, record):
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                record += data
                try:
                    dst.sendall(data)
                except OSError:
                    return

        a = threading.Thread(target=pump, args=(client, server, c2s))
        b = threading.Thread(target=pump, args=(server, client, s2c))
        a.start()
        b.start()
        a.join()
        b.join()
        client.close()
        server.close()
        with self.lock:
            self.sessions.append((bytes(c2s), bytes(s2c)))

    def take(self, timeout=10.0):
        """Waits for the next finished connection and returns its recording."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if self.sessions:
                    return self.sessions.pop(0)
            time.sleep(0.02)
        raise RuntimeError("the recorded connection did not finish")

    def close(self):
        self.sock.close()


# ---- servers --------------------------------------------------------------------------------


def write_image(path):
    """Same layout as the fuzz fixture: data, allocated zeros, data, holes."""
    pattern = bytes((i % 251) | 1 for i in range(65536))
    with open(path, "wb") as f:
        f.truncate(IMAGE_SIZE)
        f.write(pattern)
        f.seek(128 << 10)
        f.write(bytes(64 << 10))
        f.seek(512 << 10)
        f.write(pattern[:4096])


def wait_for_socket(path, proc, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early ({proc.args})")
        if os.path.exists(path):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                s.close()
                return
            except OSError:
                pass
        time.sleep(0.05)
    raise RuntimeError(f"no socket at {path}")


def server_commands(image, sock):
    """name -> argv of each server, listening on `sock`."""
    return {
        # -A adds qemu:allocation-depth; no -x, so the export is the default "".
        "qemu": ["qemu-nbd", "-f", "raw", "-r", "-t", "-A", "-k", sock, image],
        "nbdkit-file": ["nbdkit", "-f", "-r", "-U", sock, "file", image],
        "nbdkit-memory": ["nbdkit", "-f", "-U", sock, "memory", "1M"],
        "reference": [CAPTURE_BIN, "serve", sock, image, "standard"],
        "reference-draft": [CAPTURE_BIN, "serve", sock, image, "draft"],
    }


# ---- clients --------------------------------------------------------------------------------

# Our client's plans (fuzz/src/client_drive.rs Plan::selector): bit 0 extended headers, bit 1
# draft, bit 2 qemu:allocation-depth, bit 3 REQ_ONE. Chosen so that the whole corpus stays at
# about 50 files: every plan once, every server at least once.
OUR_PLANS = {
    "qemu": [0, 1, 5, 8, 2],
    "nbdkit-file": [0, 1],
    "nbdkit-memory": [0],
    "reference": [0, 1, 9],
    "reference-draft": [2],
}
LIBNBD_SESSIONS = {
    "qemu": ["map", "info", "list", "py-structured", "py-simple"],
    "nbdkit-file": ["map", "py-structured"],
    "nbdkit-memory": ["map"],
    "reference": ["map"],
    "reference-draft": [],
}


def run_our_client(proxy, selector):
    out = subprocess.run(
        [CAPTURE_BIN, "client", proxy, str(selector)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return out.stdout.strip()


PY_SESSION = r"""
import sys, nbd
sock, structured = sys.argv[1], sys.argv[2] == "1"
h = nbd.NBD()
h.set_request_structured_replies(structured)
if structured:
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_unix(sock)
size = h.get_size()
if structured and h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION):
    h.block_status(min(size, 1 << 20), 0, lambda *a: 0, nbd.CMD_FLAG_REQ_ONE)
    h.block_status(min(size, 256 << 10), 128 << 10, lambda *a: 0)
h.pread(4096, 0)
h.pread(512, 128 << 10)
try:
    h.pread(512, size)  # past the end: an error reply
except nbd.Error:
    pass
h.shutdown()
"""


def run_libnbd(proxy, kind):
    uri = f"nbd+unix:///?socket={proxy}"
    if kind == "map":
        argv = ["nbdinfo", "--map", uri]
    elif kind == "info":
        argv = ["nbdinfo", uri]
    elif kind == "list":
        argv = ["nbdinfo", "--list", uri]
    else:
        structured = "1" if kind == "py-structured" else "0"
        argv = ["/usr/bin/python3", "-c", PY_SESSION, proxy, structured]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        log(f"  {kind}: exit {out.returncode}: {out.stderr.strip()[:200]}")
    return out.stdout.strip().replace("\n", " | ")[:120]


# ---- splitting a recording ------------------------------------------------------------------


def split_handshake(c2s, s2c):
    """Walks both directions of a recorded handshake. Returns (offset of the first request in
    c2s, server_requests selector) if the connection reached transmission, else None."""
    if len(c2s) < 4 or len(s2c) < 18:
        return None
    (flags,) = struct.unpack(">I", c2s[:4])
    c, s = 4, 18
    structured = extended = False
    selected = []
    while c + 16 <= len(c2s):
        magic, opt, length = struct.unpack(">QII", c2s[c:c + 16])
        if magic != IHAVEOPT:
            return None
        data = c2s[c + 16:c + 16 + length]
        c += 16 + length
        if opt == OPT_EXPORT_NAME:
            s += 10 + (0 if flags & 2 else 124)
            break
        final = None
        names = []
        while s + 20 <= len(s2c):
            rmagic, ropt, rtype, rlen = struct.unpack(">QIII", s2c[s:s + 20])
            payload = s2c[s + 20:s + 20 + rlen]
            s += 20 + rlen
            if rtype == REP_META_CONTEXT:
                names.append(payload[4:].decode("utf-8", "replace"))
            if rtype == REP_ACK or rtype & REP_ERROR_BIT:
                final = rtype
                break
        if final is None:
            return None
        ok = final == REP_ACK
        if opt == OPT_STRUCTURED_REPLY and ok:
            structured = True
        elif opt == OPT_EXTENDED_HEADERS and ok:
            structured = extended = True
        elif opt == OPT_SET_META_CONTEXT:
            selected = names if ok else []
        elif opt == OPT_ABORT:
            return None
        elif opt == OPT_GO and ok:
            break
    else:
        return None
    return c, (structured, extended, selected)


def requests_selector(state, draft):
    """fuzz/src/server_side.rs session_for: 0x01 structured, 0x02 extended, 0x04
    base:allocation, 0x08 qemu:dirty-bitmap:b0, 0x10 the draft export."""
    structured, extended, selected = state
    if draft:
        return 0x10
    sel = (0x01 if structured else 0) | (0x02 if extended else 0)
    if "base:allocation" in selected:
        sel |= 0x04
    if any(n.startswith("qemu:dirty-bitmap:") for n in selected):
        sel |= 0x08
    return sel


# ---- hand-made frames -----------------------------------------------------------------------


def hand_made():
    """Frames no captured server sent (or sends rarely), for client_decoders."""
    cookie = 0xC0FFEE0000000001
    seeds = {}

    def structured(flags, ctype, payload):
        return struct.pack(">IHHQI", STRUCTURED_REPLY, flags, ctype, cookie, len(payload)) + payload

    def extended(flags, ctype, offset, payload):
        return (struct.pack(">IHHQQQ", EXTENDED_REPLY, flags, ctype, cookie, offset, len(payload))
                + payload)

    bs = struct.pack(">I", 0) + struct.pack(">II", 65536, 0) + struct.pack(">II", 65536, 3)
    seeds["structured-block-status"] = structured(1, 5, bs)
    ext = struct.pack(">II", 0, 2) + struct.pack(">QQ", 1 << 33, 0) + struct.pack(">QQ", 4096, 3)
    seeds["extended-block-status"] = extended(1, 6, 0, ext)
    draft = struct.pack(">Q", 0) + struct.pack(">IH", 65536, 0)
    draft += struct.pack(">Q", 65536) + struct.pack(">IH", 65536, 2)
    seeds["draft-reply"] = struct.pack(">IIQ", SIMPLE_REPLY, 0, cookie) + struct.pack(
        ">I", len(draft)) + draft
    msg = b"request runs past the end of the export"
    seeds["error-chunk"] = structured(1, 0x8001, struct.pack(">IH", 22, len(msg)) + msg)
    seeds["error-offset-chunk"] = extended(
        1, 0x8002, 512, struct.pack(">IH", 5, 2) + b"io" + struct.pack(">Q", 1024))
    data = structured(0, 1, struct.pack(">Q", 0) + bytes(range(1, 65)))
    hole = structured(0, 2, struct.pack(">QI", 64, 448))
    seeds["read-data-hole-none"] = data + hole + structured(1, 0, b"")
    return seeds


# ---- main -----------------------------------------------------------------------------------


def digest(b):
    return hashlib.sha1(b).hexdigest()[:8]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", action="store_true", help="keep the temp dir with raw recordings")
    args = ap.parse_args()

    for tool in ("qemu-nbd", "nbdkit", "nbdinfo", "cargo"):
        if shutil.which(tool) is None:
            sys.exit(f"fuzz-seeds: {tool} is needed")
    log("building the capture client (fuzz/examples/capture.rs)")
    subprocess.run(["cargo", "build", "--quiet", "--manifest-path",
                    os.path.join(FUZZ, "Cargo.toml"), "--example", "capture"], check=True)

    tmp = tempfile.mkdtemp(prefix="nbd-fuzz-seeds-")
    image = os.path.join(tmp, "disk.img")
    write_image(image)
    seeds = {t: {} for t in ("client_stream", "client_decoders", "server_options",
                             "server_requests")}
    transcript = []

    def add(target, name, data):
        # Identical content is kept once, under the first name.
        if all(data != d for d in seeds[target].values()):
            seeds[target][name] = data

    try:
        for name, _ in server_commands(image, "").items():
            sock = os.path.join(tmp, f"{name}.sock")
            proxy = os.path.join(tmp, f"{name}.proxy")
            argv = server_commands(image, sock)[name]
            log(f"{name}: {' '.join(argv)}")
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                wait_for_socket(sock, proc)
                rec = Recorder(proxy, sock)
                draft = name == "reference-draft"
                for sel in OUR_PLANS[name]:
                    line = run_our_client(proxy, sel)
                    c2s, s2c = rec.take()
                    log(f"  ours sel={sel}: {line}")
                    transcript.append((name, f"ours-sel{sel}", c2s, s2c))
                    add("client_stream", f"{name}-sel{sel}", bytes([sel]) + s2c)
                for kind in LIBNBD_SESSIONS[name]:
                    line = run_libnbd(proxy, kind)
                    c2s, s2c = rec.take()
                    log(f"  libnbd {kind}: {len(c2s)}B out, {len(s2c)}B back; {line}")
                    transcript.append((name, f"libnbd-{kind}", c2s, s2c))
                    add("client_decoders", f"{name}-libnbd-{kind}", s2c)
                for _, who, c2s, s2c in [t for t in transcript if t[0] == name]:
                    add("server_options", f"{name}-{who}", c2s)
                    split = split_handshake(c2s, s2c)
                    if split is not None and split[0] < len(c2s):
                        at, state = split
                        sel = requests_selector(state, draft)
                        add("server_requests", f"{name}-{who}", bytes([sel]) + c2s[at:])
                rec.close()
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for name, data in hand_made().items():
            add("client_decoders", f"hand-{name}", data)

        total_files = total_bytes = 0
        for target, files in seeds.items():
            d = os.path.join(CORPUS, target)
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            for name, data in sorted(files.items()):
                with open(os.path.join(d, name), "wb") as f:
                    f.write(data)
                total_files += 1
                total_bytes += len(data)
            log(f"{target}: {len(files)} seeds, {sum(map(len, files.values()))} bytes")
        log(f"corpus: {total_files} files, {total_bytes} bytes")
    finally:
        if args.keep:
            rawdir = os.path.join(tmp, "raw")
            os.makedirs(rawdir, exist_ok=True)
            for name, who, c2s, s2c in transcript:
                for tag, data in (("c2s", c2s), ("s2c", s2c)):
                    with open(os.path.join(rawdir, f"{name}-{who}.{tag}"), "wb") as f:
                        f.write(data)
            log(f"raw recordings kept in {rawdir}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
