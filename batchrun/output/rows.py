"""Output rows: one per input row, ok or failed, and the Arrow tables they are written as.

Every output starts with ``id`` and the kept input columns; the task of the job's kind
(``batchrun.tasks``) names the columns after them, from the fields here; ``request_hash`` ends
every row: a 64-bit digest of the request the row answers (its model, rendered messages or
input text, and params), so that a later run knows whether the row's input has changed. A
failed row fills ``id``, the kept columns, ``model``, ``attempts``, ``status``, ``error`` and
``request_hash``; the rest is null.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import orjson
import pyarrow as pa

OK = "ok"
FAILED = "failed"
OutputRow = dict[str, Any]

ID = pa.field("id", pa.string())
MODEL = pa.field("model", pa.string())
PROMPT_TOKENS = pa.field("prompt_tokens", pa.int32())
COMPLETION_TOKENS = pa.field("completion_tokens", pa.int32())
LATENCY_MS = pa.field("latency_ms", pa.int32())
ATTEMPTS = pa.field("attempts", pa.int16())
STATUS = pa.field("status", pa.string())
ERROR = pa.field("error", pa.string())
REQUEST_HASH = pa.field("request_hash", pa.int64())


def answer_fields(*own: pa.Field) -> list[pa.Field]:
    """The columns of a task whose request answers one row, around the task's own."""
    return [MODEL, *own, PROMPT_TOKENS, COMPLETION_TOKENS, ATTEMPTS, LATENCY_MS, STATUS, ERROR]


def output_schema(kept: dict[str, pa.DataType], answer_fields: Sequence[pa.Field]) -> pa.Schema:
    """The schema of a job's output (its columns in the module's docstring's order)."""
    kept_fields = (pa.field(name, kind) for name, kind in kept.items())
    return pa.schema([ID, *kept_fields, *answer_fields, REQUEST_HASH])


def kept_values(kept: dict[str, Any], schema: pa.Schema) -> dict[str, Any]:
    """The kept columns of a row; a value that is not text goes into a text column as JSON."""
    values = {}
    for name, value in kept.items():
        text_column = pa.types.is_string(schema.field(name).type)
        if text_column and value is not None and not isinstance(value, str):
            value = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
        values[name] = value
    return values


def failed_row(head: OutputRow, model: str | None, error: str, attempts: int) -> OutputRow:
    """A row the service could not answer: its error is data, the run goes on. ``head`` is
    the row's id, kept values and request hash (``RowsOf.head``)."""
    return {**head, "model": model, "attempts": attempts, "status": FAILED, "error": error}


def rows_to_table(rows: list[OutputRow], schema: pa.Schema) -> pa.Table:
    """An Arrow table of output rows. A vector column (a list of float32) takes its values as
    float32 bytes, straight into the column's buffer: no Python float is ever made for them."""
    vectors = [i for i, field in enumerate(schema) if _is_vector(field.type)]
    if not vectors:
        return pa.Table.from_pylist(rows, schema=schema)
    plain = schema
    columns = {}
    for index in reversed(vectors):
        field = schema.field(index)
        columns[index] = _vector_array([row.pop(field.name, None) for row in rows], field)
        plain = plain.remove(index)
    table = pa.Table.from_pylist(rows, schema=plain)
    for index in vectors:
        table = table.add_column(index, schema.field(index), columns[index])
    return table


def _is_vector(kind: pa.DataType) -> bool:
    listed = pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind)
    return bool(listed and pa.types.is_float32(kind.value_type))


def _vector_array(vectors: list[bytes | None], field: pa.Field) -> pa.Array:
    missing = pa.array([vector is None for vector in vectors])
    size = getattr(field.type, "list_size", None)
    empty = bytes(4 * size) if size else b""  # (fixed size: a null row takes its place too)
    flat = b"".join(empty if vector is None else vector for vector in vectors)
    values = pa.Array.from_buffers(pa.float32(), len(flat) // 4, [None, pa.py_buffer(flat)])
    if size:
        return pa.FixedSizeListArray.from_arrays(values, size, mask=missing)
    ends = list(itertools.accumulate(len(vector or b"") // 4 for vector in vectors))
    offsets = pa.array([0, *ends], pa.int32())
    return pa.ListArray.from_arrays(offsets, values, mask=missing)
