"""The ``/v1/batches`` routes' work: a batch's OpenAI object, creating one (checked as OpenAI
checks the request; the lines are checked later, in ``validating``), listing and cancelling."""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from batchrun.serve.batchjobs import BatchJobs
from batchrun.serve.batchrunner import BatchRunner
from batchrun.serve.files import FileStore, bounded_limit, page
from batchrun.serve.problems import Problem, not_found
from batchrun.serve.state import BatchRow, State, now

ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings")
WINDOW = "24h"
CANCELLABLE = ("validating", "in_progress")
TIMES = (
    "in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
    "cancelling_at", "cancelled_at",
)  # fmt: skip


def batch_object(row: BatchRow, counts: tuple[int, int]) -> dict[str, Any]:
    completed, failed = counts
    return {
        "id": row.id,
        "object": "batch",
        "endpoint": row.endpoint,
        "errors": orjson.loads(row.errors) if row.errors else None,
        "input_file_id": row.input_file_id,
        "completion_window": row.completion_window,
        "status": row.status,
        "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id,
        "created_at": row.created_at,
        **{name: getattr(row, name) for name in TIMES},
        "request_counts": {"total": row.total, "completed": completed, "failed": failed},
        "metadata": orjson.loads(row.metadata) if row.metadata else None,
    }


class Batches:
    """Create, read, list and cancel the batches of one owner at a time."""

    def __init__(
        self, state: State, store: FileStore, jobs: BatchJobs, runner: BatchRunner,
        window_s: float,
    ) -> None:  # fmt: skip
        self._state, self._store, self._jobs = state, store, jobs
        self._runner, self._window_s = runner, window_s

    def object(self, row: BatchRow) -> dict[str, Any]:
        return batch_object(row, self._runner.counts(row))

    def create(self, body: Any, owner: str) -> BatchRow:
        if not isinstance(body, dict):
            raise Problem(400, "The request body must be a JSON object.")
        file_id, metadata = _checked_request(body)
        source = self._store.state.file(file_id, owner)
        if source is None:
            raise not_found("File", file_id)
        if source.purpose != "batch":
            raise Problem(
                400,
                f"The file {file_id} has purpose '{source.purpose}': a batch's input file "
                "must be uploaded with purpose 'batch'.",
                param="input_file_id",
            )
        created = now()
        row = BatchRow(
            "batch_" + secrets.token_hex(16), owner, body["endpoint"], file_id, WINDOW,
            "validating", created, created + int(self._window_s),
            metadata=orjson.dumps(metadata).decode() if metadata is not None else None,
        )  # fmt: skip
        self._jobs.take_input(row.id, file_id)
        self._state.add_batch(row)
        self._runner.poke()
        return row

    def get(self, batch_id: str, owner: str) -> BatchRow:
        row = self._state.batch(batch_id, owner)
        if row is None:
            raise not_found("batch", batch_id)
        return row

    def listing(self, query: Any, owner: str) -> dict[str, Any]:
        """Newest first, ``limit`` (1-100, default 20) after the batch ``after``."""
        limit = bounded_limit(query.get("limit"), default=20, most=100)
        rows = self._state.batches(owner, query.get("after"), limit + 1)
        return page([self.object(row) for row in rows[:limit]], len(rows) > limit)

    def cancel(self, batch_id: str, owner: str) -> BatchRow:
        row = self.get(batch_id, owner)
        if row.status == "cancelling":
            return row
        moved = row.status in CANCELLABLE and self._state.update_batch(
            row.id, when=row.status, status="cancelling", cancelling_at=now()
        )
        if not moved:
            status = (self._state.batch(row.id) or row).status
            raise Problem(409, f"Cannot cancel a batch with status '{status}'.")
        self._runner.cancel(row.id)
        return self.get(batch_id, owner)


def _checked_request(body: dict[str, Any]) -> tuple[str, dict[str, str] | None]:
    file_id = body.get("input_file_id")
    if not isinstance(file_id, str) or not file_id:
        raise Problem(400, "Missing required parameter: 'input_file_id'.", param="input_file_id")
    if body.get("endpoint") not in ENDPOINTS:
        raise Problem(
            400,
            f"Invalid value for 'endpoint': {body.get('endpoint')!r}; this server runs "
            f"batches for {' and '.join(ENDPOINTS)}.",
            param="endpoint",
        )
    if body.get("completion_window") != WINDOW:
        raise Problem(
            400,
            f"Invalid value for 'completion_window': {body.get('completion_window')!r}; "
            f"supported values are: '{WINDOW}'.",
            param="completion_window",
        )
    metadata = body.get("metadata")
    if metadata is not None and not _fit_metadata(metadata):
        raise Problem(
            400, "Invalid 'metadata': at most 16 string keys (64 characters) with string "
            "values (512 characters).", param="metadata",
        )  # fmt: skip
    return file_id, metadata


def _fit_metadata(metadata: Any) -> bool:
    return (
        isinstance(metadata, dict)
        and len(metadata) <= 16
        and all(isinstance(k, str) and len(k) <= 64 for k in metadata)
        and all(isinstance(v, str) and len(v) <= 512 for v in metadata.values())
    )
