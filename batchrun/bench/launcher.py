"""Run one command and report how it went, from a small process.

Linux carries a process's peak RSS across ``exec`` (and a ``vfork``-ed child shares its
parent's memory until then), so a runner spawned straight from the bench would report the
bench's own peak whenever that is higher. This script imports nothing but the standard
library and is run by its path (``python launcher.py``, never ``-m``, which would import the
bench package), so the child it forks starts small and its peak RSS is its own.

Usage: ``python launcher.py TIMEOUT_S LOG -- COMMAND...``. The command's output goes to LOG;
it is killed after TIMEOUT_S. One JSON line on stdout: exit code, spawn time (monotonic clock),
wall and CPU seconds, peak RSS in MB.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import FrameType


def main(argv: list[str]) -> int:
    timeout_s, log, command = float(argv[0]), argv[1], argv[3:]
    with open(log, "wb") as sink:
        spawned = time.monotonic()
        child = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        reaped = False

        def expire(signum: int, frame: FrameType | None) -> None:
            if not reaped:
                os.kill(child.pid, signal.SIGKILL)

        signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        _, status, usage = os.wait4(child.pid, 0)
        reaped = True
        wall = time.monotonic() - spawned
    child.returncode = code = os.waitstatus_to_exitcode(status)
    report = {
        "code": code,
        "spawned_at": spawned,
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
