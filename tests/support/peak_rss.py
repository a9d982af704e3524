#!/usr/bin/python3
"""Runs a command and reports its peak RSS, for tests/conformance/hostile.rs.

    peak_rss.py SECONDS MIB REPORT -- COMMAND...

The command is a child of this small process, so its peak RSS (ru_maxrss of RUSAGE_CHILDREN,
an upper bound: it starts from this process's few MiB, inherited at fork) says nothing of the
test binary that started this one, whose RSS a child forked from it would inherit. The command
is killed past SECONDS or once its VmHWM passes MIB (so that a test never takes the machine's
memory with it). REPORT gets one line: "<peak KiB> <seconds> <exit code> <killed reason or ->".
The exit status is the command's.
"""

import resource
import subprocess
import sys
import time


def vm_hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def main():
    seconds, mib, report = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    command = sys.argv[sys.argv.index("--") + 1 :]
    started = time.monotonic()
    child = subprocess.Popen(command)
    killed = "-"
    while child.poll() is None:
        took = time.monotonic() - started
        hwm = vm_hwm_kib(child.pid)
        if killed == "-" and (took > seconds or hwm > mib * 1024):
            killed = f"killed after {took:.1f}s at {hwm // 1024} MiB"
            child.kill()
        time.sleep(0.02)
    took = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(report, "w") as f:
        f.write(f"{peak} {took:.3f} {child.returncode} {killed}\n")
    sys.exit(child.returncode if child.returncode >= 0 else 128 - child.returncode)


if __name__ == "__main__":
    main()
