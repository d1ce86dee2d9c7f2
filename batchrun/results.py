"""What the output holds: its Arrow schema and one row per input row, ok or failed.

``RowMaker`` turns what happened to a request (an answer, a failure) into output rows: one per
row of the request, plus one per duplicate row that followed it.

chat:       id, kept columns, model, content, reasoning, finish_reason, prompt_tokens,
            completion_tokens, attempts, latency_ms, status, error
embeddings: id, kept columns, model, embedding, prompt_tokens, attempts, status, error
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pyarrow as pa

from batchrun.answers import ChatAnswer, EmbeddingAnswer
from batchrun.catalog import MODELS, Kind
from batchrun.payloads import Duplicates, Item, Request

OK = "ok"
FAILED = "failed"

CHAT_FIELDS = [
    pa.field("model", pa.string()),
    pa.field("content", pa.string()),
    pa.field("reasoning", pa.string()),
    pa.field("finish_reason", pa.string()),
    pa.field("prompt_tokens", pa.int32()),
    pa.field("completion_tokens", pa.int32()),
    pa.field("attempts", pa.int16()),
    pa.field("latency_ms", pa.int32()),
    pa.field("status", pa.string()),
    pa.field("error", pa.string()),
]


def output_schema(kind: Kind, kept: dict[str, pa.DataType], models: tuple[str, ...]) -> pa.Schema:
    """The schema of a job's output: id, the kept input columns, then the answer's fields."""
    head = [pa.field("id", pa.string())] + [pa.field(n, t) for n, t in kept.items()]
    if kind == "chat":
        return pa.schema(head + CHAT_FIELDS)
    dims = {MODELS[m].dimensions for m in models if m in MODELS}
    dim = dims.pop() if len(dims) == 1 else None
    vector = pa.list_(pa.float32(), dim) if dim else pa.list_(pa.float32())
    return pa.schema(
        [
            *head,
            pa.field("model", pa.string()),
            pa.field("embedding", vector),
            pa.field("prompt_tokens", pa.int32()),
            pa.field("attempts", pa.int16()),
            pa.field("status", pa.string()),
            pa.field("error", pa.string()),
        ]
    )


def reserved_columns(kind: Kind) -> set[str]:
    """Output column names a kept input column may not take."""
    names = {"id", "model", "embedding", "prompt_tokens", "attempts", "status", "error"}
    return names | {f.name for f in CHAT_FIELDS} if kind == "chat" else names


def kept_values(item: Item, schema: pa.Schema) -> dict[str, Any]:
    """The kept columns of a row; a value that is not text goes into a text column as JSON."""
    values = {}
    for name, value in item.kept.items():
        text_column = pa.types.is_string(schema.field(name).type)
        if text_column and value is not None and not isinstance(value, str):
            value = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
        values[name] = value
    return values


def chat_row(
    item: Item, schema: pa.Schema, model: str, answer: ChatAnswer, attempts: int, latency_s: float
) -> dict[str, Any]:
    return {
        "id": item.id,
        **kept_values(item, schema),
        "model": model,
        "content": answer.content,
        "reasoning": answer.reasoning,
        "finish_reason": answer.finish_reason,
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "attempts": attempts,
        "latency_ms": round(latency_s * 1000),
        "status": OK,
        "error": None,
    }


def embedding_row(
    item: Item,
    schema: pa.Schema,
    model: str,
    vector: bytes,
    prompt_tokens: int | None,
    attempts: int,
) -> dict[str, Any]:
    return {
        "id": item.id,
        **kept_values(item, schema),
        "model": model,
        "embedding": vector,
        "prompt_tokens": prompt_tokens,
        "attempts": attempts,
        "status": OK,
        "error": None,
    }


def failed_row(
    item: Item, schema: pa.Schema, model: str | None, error: str, attempts: int
) -> dict[str, Any]:
    """A row the service could not answer: its error is data, the run goes on."""
    return {
        "id": item.id,
        **kept_values(item, schema),
        "model": model,
        "attempts": attempts,
        "status": FAILED,
        "error": error,
    }


Row = dict[str, Any]


class RowMaker:
    """Output rows for answered, failed and unsendable requests of one job."""

    def __init__(self, schema: pa.Schema, duplicates: Duplicates) -> None:
        self.schema = schema
        self._duplicates = duplicates
        vector = schema.field("embedding").type if "embedding" in schema.names else None
        self.dimensions: int | None = getattr(vector, "list_size", None)

    def answered(
        self, request: Request, model: str, answer: ChatAnswer | EmbeddingAnswer, latency: float
    ) -> list[Row]:
        if isinstance(answer, ChatAnswer):
            item = request.items[0]
            return [chat_row(item, self.schema, model, answer, request.attempts, latency)]
        sizes = [len(v) // 4 for v in answer.vectors]
        wrong = [size for size in sizes if self.dimensions not in (None, size)]
        if wrong:
            error = f"the service sent {wrong[0]} numbers per vector, not {self.dimensions}"
            return self.failed(request, model, error)
        shares = _token_shares(answer.prompt_tokens, [item.text for item in request.items])
        rows = []
        for item, vector, tokens in zip(request.items, answer.vectors, shares, strict=True):
            rows.append(embedding_row(item, self.schema, model, vector, tokens, request.attempts))
            for follower in self._duplicates.settled(item, model, vector):
                rows.append(embedding_row(follower, self.schema, model, vector, 0, 0))
        return rows

    def failed(self, request: Request, model: str | None, error: str) -> list[Row]:
        rows = []
        for item in request.items:
            rows.append(failed_row(item, self.schema, model, error, request.attempts))
            for follower in self._duplicates.settled(item, None, None):
                rows.append(failed_row(follower, self.schema, model, error, 0))
        return rows

    def unsendable(self, item: Item, error: str) -> Row:
        return failed_row(item, self.schema, None, error, 0)

    def reused(self, item: Item, model: str, vector: bytes) -> Row:
        return embedding_row(item, self.schema, model, vector, 0, 0)


def _token_shares(total: int | None, texts: list[str]) -> list[int | None]:
    """A packed request's prompt tokens shared among its inputs by length."""
    if total is None:
        return [None] * len(texts)
    length = sum(len(t) for t in texts) or 1
    return [round(total * len(t) / length) for t in texts]


def rows_to_table(rows: list[Row], schema: pa.Schema) -> pa.Table:
    """An Arrow table of output rows. Vectors (float32 bytes) go straight into the embedding
    column's buffer: no Python float is ever made for them."""
    if "embedding" not in schema.names:
        return pa.Table.from_pylist(rows, schema=schema)
    index = schema.get_field_index("embedding")
    vectors = [row.pop("embedding", None) for row in rows]
    table = pa.Table.from_pylist(rows, schema=schema.remove(index))
    return table.add_column(index, schema.field(index), _vector_array(vectors, schema.field(index)))


def _vector_array(vectors: list[bytes | None], field: pa.Field) -> pa.Array:
    missing = pa.array([vector is None for vector in vectors])
    size = getattr(field.type, "list_size", None)
    if size:  # fixed size: a null row still takes its place in the buffer
        empty = bytes(4 * size)
        flat = b"".join(empty if vector is None else vector for vector in vectors)
        values = pa.Array.from_buffers(pa.float32(), len(flat) // 4, [None, pa.py_buffer(flat)])
        return pa.FixedSizeListArray.from_arrays(values, size, mask=missing)
    flat = b"".join(vector or b"" for vector in vectors)
    values = pa.Array.from_buffers(pa.float32(), len(flat) // 4, [None, pa.py_buffer(flat)])
    ends = list(itertools.accumulate(len(vector or b"") // 4 for vector in vectors))
    offsets = pa.array([0, *ends], pa.int32())
    return pa.ListArray.from_arrays(offsets, values, mask=missing)
