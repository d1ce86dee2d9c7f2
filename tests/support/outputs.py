"""Outputs written through the store by hand: a chat job's output schema (with a kept
``title``), rows of it, the ids an output holds, and what a kill leaves of an open store."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from batchrun.output.layout import OutputLayout
from batchrun.output.rows import output_schema
from batchrun.output.store import Store
from batchrun.tasks.chat import FIELDS as CHAT_FIELDS
from tests.support import THINKER

SCHEMA = output_schema({"title": pa.string()}, CHAT_FIELDS)
READ_TRIES = 3


def read_columns(path: Path, columns: list[str]) -> pa.Table:
    """``columns`` of every finished part (an empty table when there is none). A part that
    another shard's compaction replaced while we listed them is read again from a new list."""
    for _ in range(READ_TRIES - 1):
        with contextlib.suppress(FileNotFoundError):
            return _read_parts(OutputLayout(path).parts(), columns)
    return _read_parts(OutputLayout(path).parts(), columns)


def _read_parts(parts: list[Path], columns: list[str]) -> pa.Table:
    if not parts:
        return pa.table({name: pa.array([], pa.string()) for name in columns})
    return ds.dataset([str(p) for p in parts], format="parquet").to_table(columns=columns)


def rows(start: int, count: int) -> pa.Table:
    """``count`` answered rows with ids ``n<start>``, ``n<start + 1>``, ..."""
    answered = [
        {
            "id": f"n{i:05d}",
            "title": f"Title {i}",
            "model": THINKER,
            "content": f"Summary {i}.",
            "reasoning": None,
            "finish_reason": "stop",
            "prompt_tokens": 40,
            "completion_tokens": 12,
            "attempts": 1,
            "latency_ms": 250,
            "status": "ok",
            "error": None,
        }
        for i in range(start, start + count)
    ]
    return pa.Table.from_pylist(answered, schema=SCHEMA)


def ids(path: Path) -> list[str]:
    """The ids the output at ``path`` holds, sorted."""
    return sorted(read_columns(path, ["id"]).column("id").to_pylist())


def abandon(store: Store) -> None:
    """What a kill leaves: the journal as written so far, and the lock released by the OS.
    (The store has no public way to let go without sealing: a killed process has none.)"""
    assert store._lock_fds
    while store._lock_fds:
        os.close(store._lock_fds.pop())
