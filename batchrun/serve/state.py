"""The server's state: files and batches in an embedded SQLite database in the state
directory, so that a killed ``serve`` loses no accepted upload or batch.

Every change is one transaction (WAL journal, ``synchronous = FULL``); rows are never held in
memory between requests. A row's ``owner`` is a digest of the client's key (``auth.owner_of``),
never the key. Lists are newest first by the insertion order (``seq``), paged by ``after``.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

TABLES_SQL = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, owner TEXT NOT NULL,
    bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, filename TEXT NOT NULL,
    purpose TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, owner TEXT NOT NULL,
    endpoint TEXT NOT NULL, input_file_id TEXT NOT NULL, completion_window TEXT NOT NULL,
    status TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    in_progress_at INTEGER, finalizing_at INTEGER, completed_at INTEGER, failed_at INTEGER,
    expired_at INTEGER, cancelling_at INTEGER, cancelled_at INTEGER,
    output_file_id TEXT, error_file_id TEXT, errors TEXT, metadata TEXT,
    total INTEGER NOT NULL DEFAULT 0, completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True)
class FileRow:
    id: str
    owner: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    deleted: int = 0


@dataclass(frozen=True)
class BatchRow:
    id: str
    owner: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    created_at: int
    expires_at: int
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: str | None = None
    """OpenAI's ``errors`` object as JSON text."""
    metadata: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0


FILE_COLUMNS = tuple(f.name for f in fields(FileRow))
BATCH_COLUMNS = tuple(f.name for f in fields(BatchRow))


def now() -> int:
    return int(time.time())


class State:
    """The database of one state directory."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.executescript(TABLES_SQL)

    def close(self) -> None:
        self._db.close()

    def add_file(self, row: FileRow) -> None:
        self._insert("files", FILE_COLUMNS, row)

    def add_batch(self, row: BatchRow) -> None:
        self._insert("batches", BATCH_COLUMNS, row)

    def _insert(self, table: str, columns: tuple[str, ...], row: FileRow | BatchRow) -> None:
        marks = ", ".join("?" for _ in columns)
        values = [getattr(row, name) for name in columns]
        with self._db:
            self._db.execute(
                f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES ({marks})", values
            )

    def file(self, file_id: str, owner: str | None = None) -> FileRow | None:
        """The file, if it exists, is not deleted and (given an owner) is the owner's."""
        found = self._one("files", FILE_COLUMNS, file_id, owner, " AND deleted = 0")
        return FileRow(*found) if found else None

    def batch(self, batch_id: str, owner: str | None = None) -> BatchRow | None:
        found = self._one("batches", BATCH_COLUMNS, batch_id, owner, "")
        return BatchRow(*found) if found else None

    def _one(
        self, table: str, columns: tuple[str, ...], key: str, owner: str | None, extra: str
    ) -> tuple[Any, ...] | None:
        where, values = "id = ?" + extra, [key]
        if owner is not None:
            where, values = where + " AND owner = ?", [key, owner]
        sql = f"SELECT {', '.join(columns)} FROM {table} WHERE {where}"
        row: tuple[Any, ...] | None = self._db.execute(sql, values).fetchone()
        return row

    def files(
        self, owner: str, purpose: str | None, after: str | None, limit: int, newest: bool
    ) -> list[FileRow]:
        where, values = "owner = ? AND deleted = 0", [owner]
        if purpose:
            where, values = where + " AND purpose = ?", [*values, purpose]
        rows = self._page("files", FILE_COLUMNS, where, values, after, limit, newest)
        return [FileRow(*row) for row in rows]

    def batches(self, owner: str, after: str | None, limit: int) -> list[BatchRow]:
        rows = self._page("batches", BATCH_COLUMNS, "owner = ?", [owner], after, limit, True)
        return [BatchRow(*row) for row in rows]

    def _page(
        self,
        table: str,
        columns: tuple[str, ...],
        where: str,
        values: list[Any],
        after: str | None,
        limit: int,
        newest: bool,
    ) -> list[tuple[Any, ...]]:
        order, beyond = ("DESC", "<") if newest else ("ASC", ">")
        if after:
            where += f" AND seq {beyond} (SELECT seq FROM {table} WHERE id = ?)"
            values = [*values, after]
        sql = f"SELECT {', '.join(columns)} FROM {table} WHERE {where} ORDER BY seq {order} LIMIT ?"
        return self._db.execute(sql, [*values, limit]).fetchall()

    def delete_file(self, file_id: str) -> None:
        with self._db:
            self._db.execute("UPDATE files SET deleted = 1 WHERE id = ?", [file_id])

    def update_batch(self, batch_id: str, *, when: str | None = None, **changes: Any) -> bool:
        """Change a batch (only while its status is ``when``, if given); whether it changed."""
        unknown = set(changes) - set(BATCH_COLUMNS)
        if unknown:
            raise KeyError(f"no such batch columns: {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in changes)
        sql, values = (
            f"UPDATE batches SET {assignments} WHERE id = ?",
            [*changes.values(), batch_id],
        )
        if when is not None:
            sql, values = sql + " AND status = ?", [*values, when]
        with self._db:
            return self._db.execute(sql, values).rowcount > 0

    def batches_in(self, statuses: tuple[str, ...]) -> list[BatchRow]:
        """Every batch (of any owner) in one of ``statuses``, oldest first."""
        marks = ", ".join("?" for _ in statuses)
        sql = f"SELECT {', '.join(BATCH_COLUMNS)} FROM batches WHERE status IN ({marks})"
        rows = self._db.execute(sql + " ORDER BY seq ASC", list(statuses)).fetchall()
        return [BatchRow(*row) for row in rows]
