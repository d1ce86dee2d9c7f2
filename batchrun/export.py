"""``batchrun export``: the output as other tools read it, streamed a row group at a time (flat
memory on a ten-million-row output).

- ``openai-batch``: OpenAI's batch output, ``output.jsonl`` (one line per ok row: ``id``,
  ``custom_id``, ``response: {status_code, request_id, body}`` with the body as the service
  answered it, ``error: null``) and ``errors.jsonl`` (failed rows: ``response: null``,
  ``error: {code, message}``). It needs the answers kept whole: a job reading an OpenAI batch
  file (``[input].format = "openai-batch"``).
- ``jsonl``: the output table, a JSON object per row.
- ``csv``: the output table; lists and structs (vectors, structured answers) as JSON text.

Each file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from batchrun.errors import JobError, OutputError, cannot_write
from batchrun.job import Job
from batchrun.output.keys import settled_parts
from batchrun.output.rows import OK

FORMATS = ("openai-batch", "jsonl", "csv")
BATCH_ROWS = 8_192
_STATUS = re.compile(r"\b([45]\d\d)\b")


def export(job: Job, format_name: str, to: Path) -> dict[str, int]:
    """Write the job's output as ``format_name`` into directory ``to``; rows per file."""
    parts = settled_parts(Path(job.spec.output.path))
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
        yield from pq.ParquetFile(part).iter_batches(batch_size=BATCH_ROWS)


@contextlib.contextmanager
def _written(path: Path) -> Iterator[IO[bytes]]:
    """A file that appears whole under ``path`` or not at all."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as sink:
            yield sink
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _openai_batch(parts: list[Path], to: Path) -> dict[str, int]:
    if "response" not in pq.read_schema(parts[0]).names:
        raise JobError(
            "--format openai-batch needs the answers as the service sent them: a job reading "
            'an OpenAI batch file ([input].format = "openai-batch"); use --format jsonl or csv'
        )
    counts = {"output.jsonl": 0, "errors.jsonl": 0}
    with _written(to / "output.jsonl") as answers, _written(to / "errors.jsonl") as errors:
        for batch in _batches(parts):
            for row in batch.select(
                ["id", "status", "response", "request_id", "error"]
            ).to_pylist():
                ok = row["status"] == OK
                (answers if ok else errors).write(orjson.dumps(_batch_line(row)) + b"\n")
                counts["output.jsonl" if ok else "errors.jsonl"] += 1
    return counts


def _batch_line(row: dict[str, Any]) -> dict[str, Any]:
    """One line of OpenAI's batch output for an output row."""
    line: dict[str, Any] = {"id": f"batch_req_{row['id']}", "custom_id": row["id"]}
    if row["status"] == OK:
        body = orjson.Fragment(row["response"])  # as the service sent it, not parsed again
        line["response"] = {"status_code": 200, "request_id": row["request_id"], "body": body}
        line["error"] = None
    else:
        status = _STATUS.search(row["error"] or "")
        code = status.group(1) if status else "failed"
        line["response"] = None
        line["error"] = {"code": code, "message": row["error"]}
    return line


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
