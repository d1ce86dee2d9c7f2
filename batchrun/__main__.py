"""``python -m batchrun`` and the ``batchrun`` command.

The command's libraries (Arrow, polars, aiohttp, pydantic) take a second or so to load, before
a run's own signal handlers are in place. A Ctrl-C while they load is only noted (raised in
the middle of an extension's start, a ``KeyboardInterrupt`` can leave CPython to kill itself
with SIGINT at exit, whatever catches it), then ends the command with exit 130 and one line;
one after they loaded and before a run's handlers does the same. Never a traceback.
"""

import signal
import sys
from types import FrameType

from batchrun.errors import EXIT_INTERRUPTED

INTERRUPTED = "interrupted: run the same command again to resume"


def main() -> int:
    interrupts: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        interrupts.append(signum)

    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # (nohup, a background job)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN if ignored else note)
    try:
        from batchrun.cli import main as command
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupts:
        print(INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED
    try:
        return command()
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
