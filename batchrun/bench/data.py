"""What the bench's jobs read and where they write: generated inputs, job files, and an output
that already holds done rows (for the resume figure).

Inputs are written as bytes with ``%`` formatting, half a million lines at a time, so the
10-million-row input takes seconds, not minutes. Row ``i`` has the id ``r%08d``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.input.checks import open_input
from batchrun.job.catalog import Kind
from batchrun.job.spec import Job, load_job
from batchrun.output.identity import Identity, check_identity
from batchrun.output.layout import OutputLayout
from batchrun.output.rows import OK
from batchrun.output.store import Store
from batchrun.plan.kept_index import kept_index
from batchrun.tasks import job_schema, task_for

CHAT_MODEL = "qwen3-32b-awq"
EMBED_MODEL = "bge-m3"
SYSTEM = "/no_think Be brief."
USER = "Summarise:\n\n{text}"
PARAMS: dict[str, Any] = {"temperature": 0.3, "max_tokens": 64}
CHUNK_LINES = 500_000
MODEL_OF: dict[Kind, str] = {"chat": CHAT_MODEL, "embeddings": EMBED_MODEL}
REQUEST_LINES: dict[Kind, list[str]] = {
    "chat": [
        "[prompt]",
        f"system = {json.dumps(SYSTEM)}",
        f"user = {json.dumps(USER)}",
        "[params]",
        *(f"{key} = {json.dumps(value)}" for key, value in PARAMS.items()),
    ],
    "embeddings": ['text = "text"'],
}
"""What a bench job of each kind sends: the rest of [input], [prompt] and [params]."""

NEWS = (
    b'{"id":"r%08d","title":"Item %d","text":"Item %d happened today. The city council met '
    b'about item %d. It was sunny. Experts expect more news on %d."}\n'
)
PASSAGE = (
    b'{"id":"r%08d","text":"Passage %d: rivers, cities and %d lanterns; '
    b'a note on topic %d of the corpus."}\n'
)
SHORT = b'{"id":"r%08d","text":"short text %d"}\n'


def row_id(number: int) -> str:
    """The id of generated row ``number``."""
    return f"r{number:08d}"


def write_rows(path: Path, count: int, template: bytes) -> Path:
    """Write ``count`` JSONL lines; every ``%`` field of ``template`` is the row number."""
    fields = template.count(b"%")
    with path.open("wb") as sink:
        for start in range(0, count, CHUNK_LINES):
            stop = min(start + CHUNK_LINES, count)
            sink.write(b"".join([template % ((i,) * fields) for i in range(start, stop)]))
    return path


def write_job(
    path: Path,
    *,
    kind: Kind,
    base_url: str,
    input_path: Path,
    rps: float | None = None,
    keep: tuple[str, ...] = (),
    run: Mapping[str, Any] | None = None,
) -> Path:
    """A job file over ``input_path`` writing to ``<path's dir>/out-<stem>``."""
    model = MODEL_OF[kind]
    lines = [f"name = {_toml(path.stem)}", f"kind = {_toml(kind)}", f"model = {_toml(model)}"]
    lines += ["[endpoint]", f"base_url = {_toml(base_url)}", 'api_key_env = "SCIBOX_API_KEY"']
    lines += ["[input]", f"path = {_toml(str(input_path))}", 'id = "id"', *REQUEST_LINES[kind]]
    output = path.parent / f"out-{path.stem}"
    lines += ["[output]", f"path = {_toml(str(output))}", f"keep = {_toml(list(keep))}"]
    lines += ["[run]", *(f"{key} = {_toml(value)}" for key, value in (run or {}).items())]
    if rps is not None:
        lines += [f"[models.{_toml(model)}]", f"rps = {_toml(rps)}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def output_of(job: Path) -> Path:
    """The output directory ``write_job`` gave ``job``."""
    return job.parent / f"out-{job.stem}"


def run_summary(job: Path, shard: str | None = None) -> dict[str, Any]:
    """The ``_summary.json`` the last run of ``job`` (or of its ``shard``) left in its output."""
    path = OutputLayout(output_of(job)).summary(shard)
    try:
        data: dict[str, Any] = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"{path}: no run summary ({exc})") from None
    return data


def _toml(value: object) -> str:
    """A TOML value: JSON's strings, numbers, booleans and arrays are valid TOML."""
    return json.dumps(value, ensure_ascii=False)


def write_done_parts(job_path: Path, count: int, changed_every: int = 0) -> None:
    """Rows ``0 .. count-1`` as done (status ok) in parts of the job's output, with the job's
    identity, input index and keys beside them, as a finished earlier run would have left
    them (the index is made here by batchrun's own code; the rows take its request hashes,
    but every ``changed_every``-th row another: its text changed since)."""
    job = load_job(job_path)
    files, kept = open_input(job)
    schema = job_schema(job, kept)
    output = Path(job.spec.output.path)
    output.mkdir(parents=True, exist_ok=True)
    with kept_index(job, files, output, task_for(job, schema)) as (index, _):
        hashes = _first_request_hashes(index, count).to_numpy().copy()
    if changed_every:
        hashes[::changed_every] ^= 1
    part_rows = job.spec.output.part_rows  # parts as big as a run of the job writes
    for number, start in enumerate(range(0, count, part_rows)):
        size = min(part_rows, count - start)
        ids = pa.array([row_id(i) for i in range(start, start + size)], pa.string())
        table = _done_rows(job, schema, ids, pa.array(hashes[start : start + size]))
        pq.write_table(table, OutputLayout(output).part(f"bench{number:05d}-1-1"))
    check_identity(output, Identity(job.name, job.kind, job.fingerprint()))
    Store(output, schema).open().close()  # keys saved, as a finished run leaves them


def _done_rows(job: Job, schema: pa.Schema, ids: pa.Array, hashes: pa.Array) -> pa.Table:
    values: dict[str, object] = {
        "model": job.models[0],
        "status": OK,
        "content": "done",
        "finish_reason": "stop",
        "attempts": 1,
    }
    given = {"id": ids, "request_hash": hashes}
    size = len(ids)
    columns = [given.get(f.name, _constant(values.get(f.name), f.type, size)) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def _first_request_hashes(index: Path, count: int) -> pa.Array:
    """The request hashes of the first ``count`` input rows (the index is in no order)."""
    table = pq.read_table(index, columns=["file", "offset", "request_hash"])
    table = table.sort_by([("file", "ascending"), ("offset", "ascending")])
    return table.column("request_hash").slice(0, count).combine_chunks()


def _constant(value: object, kind: pa.DataType, count: int) -> pa.Array:
    if value is None:
        return pa.nulls(count, kind)
    return pa.repeat(pa.scalar(value, kind), count)
