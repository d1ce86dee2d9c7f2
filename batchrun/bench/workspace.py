"""Where the bench works: the sizes of its jobs, its temporary directory, its progress lines."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sizes:
    """How big each section's job is: the issue's sizes, or small ones for a smoke test."""

    chat_rows: int = 60
    embed_texts: int = 3_000
    lifted_chat_rows: int = 20_000
    lifted_texts: int = 200_000
    resume_done: int = 10_000_000
    resume_left: int = 50_000
    big_rows: int = 10_000_000
    whole_small: int = 200_000
    whole_large: int = 2_000_000
    big_limit: int = 2_000
    adaptive_rows: int = 100
    team_rows: int = 60
    window_rows: int = 300
    serve_chat_lines: int = 300
    serve_embed_lines: int = 50_000


QUICK = Sizes(
    chat_rows=12,
    embed_texts=640,
    lifted_chat_rows=2_000,
    lifted_texts=20_000,
    resume_done=50_000,
    resume_left=2_500,
    big_rows=500_000,
    whole_small=5_000,
    whole_large=50_000,
    big_limit=500,
    adaptive_rows=30,
    team_rows=12,
    window_rows=20,
    serve_chat_lines=20,
    serve_embed_lines=2_000,
)


class Workspace:
    """The bench's temporary directory (one subdirectory per section) and its clock."""

    def __init__(self, root: Path, sizes: Sizes, started: float | None = None) -> None:
        self.root = root
        self.sizes = sizes
        self.started = time.monotonic() if started is None else started
        self._lock = threading.Lock()

    def directory(self, name: str) -> Path:
        """A fresh subdirectory for one section's files."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=False)
        return path

    def say(self, message: str) -> None:
        """One progress line on stderr, stamped with the seconds since the bench started."""
        with self._lock:
            print(f"[{time.monotonic() - self.started:6.1f} s] {message}", file=sys.stderr)
            sys.stderr.flush()
