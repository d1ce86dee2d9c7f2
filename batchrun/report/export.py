"""``batchrun export``: the output as other tools read it, streamed a row group at a time (flat
memory on a ten-million-row output).

- ``openai-batch``: OpenAI's batch output, ``output.jsonl`` (one line per ok row: ``id``,
  ``custom_id`` (the row's id), ``response: {status_code, request_id, body}``, ``error:
  null``) and ``errors.jsonl`` (failed rows). A batch file's rows (``[input].format =
  "openai-batch"``) give the body as the service answered it; any other chat job's rows give
  a ``chat.completion`` body made of their columns. A failed row that had an HTTP answer is
  written as OpenAI writes one, ``response: {status_code, request_id, body: {error: {message,
  type, param, code}}}`` with the service's own error body where the output kept it (a batch
  file's rows; a line refused before sending gets status 400 and the code
  ``invalid_batch_line``); one that had none (no answer in time, a dropped connection, no text
  to send) ``response: null, error: {code, message}``.
- ``jsonl``: the output table, a JSON object per row.
- ``csv``: the output table; lists and structs (vectors, structured answers) as JSON text.

Each file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from batchrun.errors import JobError, OutputError, cannot_write
from batchrun.job.spec import Job
from batchrun.output.atomic import written
from batchrun.output.catalogue import checked_reading
from batchrun.output.done import settled_parts
from batchrun.output.layout import part_time
from batchrun.output.parts import part_batches
from batchrun.output.rows import OK
from batchrun.tasks.openai_batch import request_id

FORMATS = ("openai-batch", "jsonl", "csv")
EXPORT_BATCH_ROWS = 8_192
_STATUS = re.compile(r"(?:gave up after \d+ attempts: )?([1-5]\d\d) (?:from|bad request)\b")
"""The HTTP status of a failed row, from the error the service's client wrote
(``400 bad request: ...``, ``gave up after 8 attempts: 503 from URL: ...``)."""


def export(job: Job, format_name: str, to: Path) -> dict[str, int]:
    """Write the job's output as ``format_name`` into directory ``to``; rows per file (none
    written when a part turns out damaged: ``checked_reading``)."""
    output = Path(job.spec.output.path)
    with checked_reading(output):
        return _export(settled_parts(output), format_name, to)


def _export(parts: list[Path], format_name: str, to: Path) -> dict[str, int]:
    try:
        to.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file of that name (a directory is fine)
        raise OutputError(
            f"--to {to}: is a file; give a directory to write into (it is made if missing)"
        ) from None
    except OSError as exc:
        raise cannot_write(to, exc, "cannot make the directory") from None
    if format_name == "openai-batch":
        return _openai_batch(parts, to)
    if format_name == "jsonl":
        with _written(to / "output.jsonl") as sink:
            return {"output.jsonl": _jsonl(parts, sink)}
    with _written(to / "output.csv") as sink:
        return {"output.csv": _csv(parts, sink)}


def _batches(parts: list[Path]) -> Iterator[pa.RecordBatch]:
    for part in parts:
        yield from part_batches(part, EXPORT_BATCH_ROWS)


@contextlib.contextmanager
def _written(path: Path) -> Iterator[IO[bytes]]:
    """A file that appears whole under ``path`` or not at all."""
    with written(path) as temporary, temporary.open("wb") as sink:
        yield sink


def _openai_batch(parts: list[Path], to: Path) -> dict[str, int]:
    names = pq.read_schema(parts[0]).names
    if "response" not in names and "content" not in names:
        raise JobError(
            "--format openai-batch writes chat answers (and a batch file's answers); this is "
            "an embeddings job's output: use --format jsonl or csv"
        )
    line_of = _batch_file_line if "response" in names else _chat_line
    counts = {"output.jsonl": 0, "errors.jsonl": 0}
    with _written(to / "output.jsonl") as answers, _written(to / "errors.jsonl") as errors:
        for part in parts:
            created = part_time(part) // 1_000_000_000
            for batch in part_batches(part, EXPORT_BATCH_ROWS):
                for row in batch.to_pylist():
                    ok = row["status"] == OK
                    line = line_of(row, created) if ok else _error_line(row)
                    (answers if ok else errors).write(orjson.dumps(line) + b"\n")
                    counts["output.jsonl" if ok else "errors.jsonl"] += 1
    return counts


def _line(row: dict[str, Any], response: Any, error: Any = None) -> dict[str, Any]:
    return {"id": f"batch_req_{row['id']}", "custom_id": row["id"], "response": response,
            "error": error}  # fmt: skip


def _batch_file_line(row: dict[str, Any], created: int) -> dict[str, Any]:
    """An ok row of a batch file: the body as the service sent it, not parsed again."""
    body = orjson.Fragment(row["response"])
    return _line(row, {"status_code": 200, "request_id": row["request_id"], "body": body})


def _chat_line(row: dict[str, Any], created: int) -> dict[str, Any]:
    """An ok row of a chat job, as the ``chat.completion`` its columns tell."""
    message = {"role": "assistant", "content": row["content"]}
    if row.get("reasoning") is not None:
        message["reasoning_content"] = row["reasoning"]
    prompt, completion = row["prompt_tokens"], row["completion_tokens"]
    usage = {"prompt_tokens": prompt or 0, "completion_tokens": completion or 0}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    choice = {"index": 0, "message": message, "finish_reason": row.get("finish_reason") or "stop"}
    body = {"id": f"chatcmpl-{row['id']}", "object": "chat.completion", "created": created,
            "model": row["model"], "choices": [choice], "usage": usage}  # fmt: skip
    return _line(row, {"status_code": 200, "request_id": request_id(), "body": body})


def _error_line(row: dict[str, Any]) -> dict[str, Any]:
    """A failed row as OpenAI's error file holds it: the HTTP answer it had, or (none) the
    error's code and message."""
    message, kept = row["error"] or "failed", row.get("response")
    status = _STATUS.match(message)
    if kept is None and status is None:
        code = "no_answer" if "no answer" in message or "dropped" in message else "failed"
        return _line(row, None, {"code": code, "message": message})
    status_code = int(status.group(1)) if status else 400 if kept is not None else 500
    kind = "invalid_request_error" if status_code < 500 else "server_error"
    error = {"message": message, "type": kind, "param": None, "code": None}
    body = {"error": _service_error(kept, error) if kept is not None else error}
    request = row.get("request_id") or request_id()
    return _line(row, {"status_code": status_code, "request_id": request, "body": body})


def _service_error(kept: str, default: dict[str, Any]) -> dict[str, Any]:
    """The service's error object (a line refused before sending: batchrun's own), its
    ``message``, ``type``, ``param`` and ``code`` as it sent them, any it left out null."""
    try:
        answer = orjson.loads(kept)
    except orjson.JSONDecodeError:
        return {**default, "message": f"{default['message']} ({kept[:300]})"}
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict):
        return default
    fields = {name: error.get(name) for name in ("message", "type", "param", "code")}
    return {**error, **fields, "message": fields["message"] or default["message"]}


def _jsonl(parts: list[Path], sink: IO[bytes]) -> int:
    written = 0
    for batch in _batches(parts):
        sink.write(b"".join(orjson.dumps(row, default=str) + b"\n" for row in batch.to_pylist()))
        written += batch.num_rows
    return written


def _csv(parts: list[Path], sink: IO[bytes]) -> int:
    written, writer = 0, None
    for batch in _batches(parts):
        flat = _flat(batch)
        if writer is None:
            writer = pacsv.CSVWriter(sink, flat.schema)
        writer.write_batch(flat)
        written += batch.num_rows
    if writer is not None:
        writer.close()
    return written


def _flat(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Lists and structs as JSON text: CSV holds scalars only."""
    columns = []
    for column, field in zip(batch.columns, batch.schema, strict=True):
        if pa.types.is_nested(field.type):
            values = [
                None if v is None else orjson.dumps(v, default=str).decode()
                for v in column.to_pylist()
            ]
            column = pa.array(values, pa.string())
        columns.append(column)
    return pa.record_batch(columns, names=batch.schema.names)
