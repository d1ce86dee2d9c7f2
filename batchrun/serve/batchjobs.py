"""Each batch is an ordinary batchrun job: its input a link to the uploaded file (format
``openai-batch``), its output a directory under ``state/batches/<id>/``. This module makes
that job and, when the batch ends, its output and error files in OpenAI's line format: what
``batchrun export --format openai-batch`` writes (``batchrun.report.export``), plus, for an expired
batch, a ``batch_expired`` line for every request it did not get to.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchrun.errors import OutputError
from batchrun.job.spec import Job
from batchrun.output.atomic import written
from batchrun.output.catalogue import checked_reading
from batchrun.output.done import settled_parts
from batchrun.output.parts import read_part
from batchrun.report.export import export
from batchrun.serve.config import ServeConfig
from batchrun.serve.files import FileStore
from batchrun.serve.state import BatchRow

EXPIRED = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}


@dataclass(frozen=True)
class Outputs:
    """A finished batch's files and counts."""

    output_file_id: str | None
    error_file_id: str | None
    completed: int
    failed: int


class BatchJobs:
    """Where each batch's job lives, how it is made, and its files at the end."""

    def __init__(self, root: Path, config: ServeConfig, store: FileStore) -> None:
        self.root = root
        self._config = config
        self._store = store
        root.mkdir(parents=True, exist_ok=True)

    def home(self, batch_id: str) -> Path:
        return self.root / batch_id

    def take_input(self, batch_id: str, file_id: str) -> None:
        """Link the input file into the batch's directory: deleting the file later does not
        take it from the batch."""
        home = self.home(batch_id)
        home.mkdir(parents=True, exist_ok=True)
        target = home / "input.jsonl"
        if target.exists():
            return
        try:
            os.link(self._store.path(file_id), target)
        except OSError:
            shutil.copyfile(self._store.path(file_id), target)

    def job(self, batch_id: str, base_url: str, rates: dict[str, float]) -> Job:
        home = self.home(batch_id).resolve()  # (its job file is read from anywhere)
        endpoint = self._config.endpoint
        raw: dict[str, Any] = {
            "name": batch_id,
            "endpoint": {"base_url": base_url, "api_key_env": endpoint.api_key_env},
            "input": {"path": str(home / "input.jsonl"), "format": "openai-batch"},
            "output": {"path": str(home / "output")},
            "run": self._config.run.model_dump(exclude_defaults=True),
            "models": {name: {"rps": rps} for name, rps in rates.items()},
        }
        _write_toml(home / "job.toml", raw)  # for `batchrun report`, `status`, `export`
        limits = self._config.limits.model_dump(exclude_none=True)
        if limits:  # (not in the file: a Redis URL may hold a password)
            raw["limits"] = limits
        job = Job.from_dict(raw, home / "job.toml")
        return job

    def outputs(self, row: BatchRow, job: Job, expired: bool) -> Outputs:
        """Write the batch's output and error files and record them as ``batch_output``."""
        export_dir = self.home(row.id) / "export"
        try:
            counts = export(job, "openai-batch", export_dir)
        except OutputError:  # nothing answered at all (cancelled or expired early)
            export_dir.mkdir(parents=True, exist_ok=True)
            for name in ("output.jsonl", "errors.jsonl"):
                (export_dir / name).write_bytes(b"")
            counts = {"output.jsonl": 0, "errors.jsonl": 0}
        failed = counts["errors.jsonl"]
        if expired:
            failed += _append_expired(job, export_dir / "errors.jsonl")
        output_id = self._record(row, export_dir / "output.jsonl", "output", counts["output.jsonl"])
        error_id = self._record(row, export_dir / "errors.jsonl", "error", failed)
        return Outputs(output_id, error_id, counts["output.jsonl"], failed)

    def _record(self, row: BatchRow, path: Path, kind: str, lines: int) -> str | None:
        if not lines:
            return None
        file_id = "file-" + hashlib.sha256(f"{row.id}/{kind}".encode()).hexdigest()[:24]
        self._store.add(path, row.owner, f"{row.id}_{kind}.jsonl", "batch_output", file_id)
        return file_id


def _write_toml(path: Path, raw: dict[str, Any]) -> None:
    """The job as a job file: its tables hold only strings, numbers and booleans."""
    lines = [f"name = {_value(raw['name'])}"]
    for table, keys in raw.items():
        if not isinstance(keys, dict):
            continue
        nested = {k: v for k, v in keys.items() if isinstance(v, dict)}
        lines += [f"[{table}]"] + [f"{k} = {_value(v)}" for k, v in keys.items() if k not in nested]
        for name, values in nested.items():
            lines += [f'[{table}."{name}"]'] + [f"{k} = {_value(v)}" for k, v in values.items()]
    with written(path) as temporary:
        temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return orjson.dumps(str(value)).decode()  # a TOML basic string is JSON's


def _append_expired(job: Job, errors: Path) -> int:
    """A ``batch_expired`` line for each line of the input the output has no row for."""
    done = _answered_ids(Path(job.spec.output.path))
    written = 0
    with Path(job.spec.input.path).open("rb") as lines, errors.open("ab") as sink:
        for line in lines:
            if not line.strip():
                continue
            custom_id = orjson.loads(line)["custom_id"]
            if custom_id in done:
                continue
            entry = {"id": f"batch_req_{custom_id}", "custom_id": custom_id}
            sink.write(orjson.dumps({**entry, "response": None, "error": EXPIRED}) + b"\n")
            written += 1
    return written


def _answered_ids(output: Path) -> set[str]:
    try:
        parts = settled_parts(output)
    except OutputError:
        return set()
    with checked_reading(output):  # (a damaged part: the batch fails, naming it)
        return {i for part in parts for i in read_part(part, columns=["id"])["id"].to_pylist()}
