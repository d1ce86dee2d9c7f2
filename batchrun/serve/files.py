"""Files: the bytes on disk in the state directory (``files/<id>.jsonl``), their rows in the
state, and the ``/v1/files`` routes.

An upload is streamed to a temporary file a chunk at a time (a 1 GB file is never in memory),
fsynced and renamed, and only then recorded: a killed server leaves no half file under an id.
Output and error files of batches are added here too (``add``), as ``batch_output``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from batchrun.output.atomic import fsync_directory
from batchrun.serve.problems import Problem, not_found
from batchrun.serve.state import FileRow, State, now

CHUNK = 1 << 20
PURPOSES = ("batch", "batch_output", "user_data", "assistants", "fine-tune", "vision")
LIST_MAX = 10_000


def new_file_id() -> str:
    return "file-" + secrets.token_hex(12)


def file_object(row: FileRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": row.created_at,
        "filename": row.filename,
        "purpose": row.purpose,
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


class FileStore:
    """The files' bytes under ``state/files`` and their rows in the state."""

    def __init__(self, root: Path, state: State, max_bytes: int) -> None:
        self.root = root
        self.state = state
        self.max_bytes = max_bytes
        root.mkdir(parents=True, exist_ok=True)
        for leftover in root.glob(".upload-*"):  # an upload a killed server was taking
            leftover.unlink(missing_ok=True)

    def path(self, file_id: str) -> Path:
        return self.root / f"{file_id}.jsonl"

    def add(
        self, source: Path, owner: str, filename: str, purpose: str, file_id: str | None = None
    ) -> FileRow:
        """Take ``source`` (renamed, same filesystem) as a new file (or as ``file_id``)."""
        file_id = file_id or new_file_id()
        os.replace(source, self.path(file_id))
        fsync_directory(self.root)
        row = FileRow(file_id, owner, self.path(file_id).stat().st_size, now(), filename, purpose)
        self.state.add_file(row)
        return row

    async def receive(self, part: BodyPartReader) -> tuple[Path, int]:
        """Stream an uploaded part to a temporary file; 413 past the size limit."""
        temporary = self.root / f".upload-{secrets.token_hex(8)}"
        size = 0
        try:
            with temporary.open("wb") as sink:
                while chunk := await part.read_chunk(CHUNK):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise Problem(
                            413,
                            f"The file is larger than this server takes "
                            f"({self.max_bytes // 1_000_000} MB: [batches].max_file_mb).",
                            code="file_too_large",
                        )
                    sink.write(chunk)
                sink.flush()
                os.fsync(sink.fileno())
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return temporary, size

    def remove(self, row: FileRow) -> None:
        """Delete a file (a batch reading it holds a link of its own: it goes on)."""
        self.state.delete_file(row.id)
        self.path(row.id).unlink(missing_ok=True)


async def upload(store: FileStore, request: web.Request, owner: str) -> FileRow:
    """``POST /v1/files``: a multipart body with ``purpose`` and ``file``."""
    if not request.content_type.startswith("multipart/"):
        raise Problem(400, "Upload a file as multipart/form-data (file, purpose).")
    reader = await request.multipart()
    purpose, received, filename = None, None, "upload.jsonl"
    try:
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "file":
                filename = part.filename or filename
                received = await store.receive(part)
            elif part.name == "purpose":
                purpose = (await part.text()).strip()
        return _accepted(store, owner, purpose, received, filename)
    except BaseException:
        if received is not None:
            received[0].unlink(missing_ok=True)
        raise


def _accepted(
    store: FileStore,
    owner: str,
    purpose: str | None,
    received: tuple[Path, int] | None,
    filename: str,
) -> FileRow:
    if received is None:
        raise Problem(400, "Missing required parameter: 'file'.", param="file")
    if purpose is None:
        raise Problem(400, "Missing required parameter: 'purpose'.", param="purpose")
    if purpose not in PURPOSES:
        raise Problem(
            400, f"'{purpose}' is not one of {list(PURPOSES)} - 'purpose'", param="purpose"
        )
    return store.add(received[0], owner, filename, purpose)


def listing(store: FileStore, query: Any, owner: str) -> dict[str, Any]:
    """``GET /v1/files``: the owner's files, newest first (``order=asc`` oldest first)."""
    limit = bounded_limit(query.get("limit"), default=LIST_MAX, most=LIST_MAX)
    newest = query.get("order", "desc") != "asc"
    rows = store.state.files(owner, query.get("purpose"), query.get("after"), limit + 1, newest)
    return page([file_object(row) for row in rows[:limit]], len(rows) > limit)


def owned_file(store: FileStore, file_id: str, owner: str) -> FileRow:
    row = store.state.file(file_id, owner)
    if row is None:
        raise not_found("file", file_id)
    return row


def bounded_limit(text: str | None, *, default: int, most: int) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise Problem(400, f"Invalid 'limit': {text!r} is not an integer.", param="limit") from None
    if not 1 <= value <= most:
        raise Problem(400, f"Invalid 'limit': give 1 to {most}, got {value}.", param="limit")
    return value


def page(data: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    """OpenAI's cursor page."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }
