"""Files that appear whole or not at all: every file batchrun keeps is written beside its
place, flushed to disk, renamed over it, and its directory flushed, so a crash or a full disk
at any moment leaves the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def written(path: Path, temporary: Path | None = None) -> Iterator[Path]:
    """A temporary file beside ``path`` (``temporary``, else ``.<name>.<pid>.tmp``) for the
    block to write; when the block ends well it is fsynced and renamed over ``path`` (a block
    that leaves no file there renames nothing), else removed."""
    temporary = temporary or path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield temporary
        if temporary.exists():
            with open(temporary, "rb") as sink:
                os.fsync(sink.fileno())
            os.replace(temporary, path)
            fsync_directory(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def fsync_directory(directory: Path) -> None:
    """Flush a directory's entries (a rename or removal in it) to disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
