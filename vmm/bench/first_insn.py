#!/usr/bin/env python3
"""Exec-to-first-guest-instruction timer.

Runs COMMAND N times. The guest's first instruction writes one byte to COM1 (port 0x3f8), which
the VMM copies to its stdout (a pipe read here). Prints one line per run:
    <exec to first byte, us> <exec to exit, us> <exit status>
The clock starts right before the fork/exec of COMMAND.

    first_insn.py N COMMAND...
"""
import os
import subprocess
import sys
import time


def main() -> int:
    n = int(sys.argv[1])
    cmd = sys.argv[2:]
    for _ in range(n):
        t0 = time.perf_counter_ns()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL)
        first = os.read(p.stdout.fileno(), 1)
        t1 = time.perf_counter_ns()
        status = p.wait()
        t2 = time.perf_counter_ns()
        p.stdout.close()
        if not first:
            print(f"no serial output (exit status {status})", file=sys.stderr)
            return 1
        print((t1 - t0) // 1000, (t2 - t0) // 1000, status, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
