"""`python -m benchmarks.launch LOG -- COMMAND ...`: run COMMAND with its output in LOG, then print one
JSON line: its exit code, wall time and peak RSS.

Why a launcher: Linux carries a process's peak RSS across fork and exec, so a child started straight
from the benchmark (whose emulators hold every log event) would report the benchmark's own peak. This
small process starts the poller instead, so the figure is the poller's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    log, separator, *command = argv
    if separator != "--" or not command:
        print("usage: python -m benchmarks.launch LOG -- COMMAND ...", file=sys.stderr)
        return 2
    with open(log, "w", encoding="utf-8") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own resource usage
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    print(json.dumps({"exit_code": proc.returncode, "wall_seconds": wall, "peak_rss_kib": usage.ru_maxrss}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
