"""``python -m batchrun`` and the ``batchrun`` command.

The command's libraries (Arrow, polars, aiohttp, pydantic) take a second or so to load, before
a run's own signal handlers are in place. A Ctrl-C while they load is only noted (raised in
the middle of an extension's start, a ``KeyboardInterrupt`` can leave CPython to kill itself
with SIGINT at exit, whatever catches it), then ends the command with exit 130 and one line;
one after they loaded and before a run's handlers does the same. Never a traceback.
"""

import importlib.abc
import signal
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import FrameType, ModuleType

from batchrun.errors import EXIT_INTERRUPTED

INTERRUPTED = "interrupted: run the same command again to resume"


def main() -> int:
    interrupts: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        interrupts.append(signum)

    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # (nohup, a background job)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN if ignored else note)
    try:
        _pyarrow_without_pandas()
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


class _NoPandas(importlib.abc.MetaPathFinder):
    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name.partition(".")[0] == "pandas":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def _pyarrow_without_pandas() -> None:
    """pyarrow imports pandas, when it is installed, at the first array it makes of Python
    values, only to ask whether they are pandas objects; the command never holds one, and
    pandas would cost each run 43 MB of memory and 0.4 s. pyarrow asks once and remembers:
    pandas is out of its reach while it asks (and importable again after)."""
    hidden = _NoPandas()
    sys.meta_path.insert(0, hidden)
    try:
        import pyarrow as pa

        pa.array([0])
    finally:
        sys.meta_path.remove(hidden)


if __name__ == "__main__":
    sys.exit(main())
