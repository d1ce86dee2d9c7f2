"""``python -m batchrun`` and the ``batchrun`` command.

The command's libraries (Arrow, polars, aiohttp, pydantic) take a second or so to load, before
any signal handler of a run is in place: a Ctrl-C then (or before a run's own handler, which
stops it gracefully) ends the command with exit 130 and one line, never a traceback.
"""

import sys

from batchrun.errors import EXIT_INTERRUPTED


def main() -> int:
    try:
        from batchrun.cli import main as command

        return command()
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
