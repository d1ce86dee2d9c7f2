"""The input index kept beside the output: built by one pass over the input, and reused by every
later run for as long as the input files (their size and mtime), the job's requests and the
id hash function are the same. Resuming a ten-million-row job then reads no input row that is
already done (see ``batchrun.diff``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa

from batchrun.hashing import HASHER
from batchrun.input.checks import input_signature
from batchrun.input.index import SCHEMA, InputCheck, check_duplicates, index_input
from batchrun.job import Job
from batchrun.output.layout import OutputLayout, read_json, write_json
from batchrun.tasks.base import Task

CHECK_VERSION = 4
"""The shape of the remembered whole-input check (2: rows that cannot be sent, with why;
3: the models the rows name; 4: a batch file's lines read leniently, up to 1,000 bad lines
named, and what makes a line bad as issue 25 says)."""


@contextlib.contextmanager
def input_index(
    job: Job, files: list[Path], output: Path, task: Task[Any]
) -> Iterator[tuple[Path, InputCheck]]:
    """The index of ``files`` for ``job`` and the whole-input check: remembered in the
    output directory when it exists, else made in a temporary directory for the block."""
    layout = OutputLayout(output)
    key = {
        "files": input_signature(files),
        "requests": job.fingerprint(),
        "hasher": HASHER,
        "check": CHECK_VERSION,
    }
    remembered = read_json(layout.input_file)
    if remembered and remembered.get("key") == key and layout.input_index.exists():
        yield layout.input_index, _check(files, remembered)
        return
    if not output.is_dir():
        with tempfile.TemporaryDirectory(prefix="batchrun-index-") as directory:
            index = Path(directory) / layout.input_index.name
            yield index, _build(job, files, task, index)
        return
    check = _build(job, files, task, layout.input_index)
    if not check.duplicate_count:
        write_json(layout.input_file, {"key": key, "check": _remembered(check)})
    yield layout.input_index, check


def _build(job: Job, files: list[Path], task: Task[Any], index: Path) -> InputCheck:
    """Write the index atomically (a killed pass leaves no half index)."""
    temporary = index.with_name(f".{index.name}.{os.getpid()}.tmp")
    with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as writer:
        check = index_input(
            files, job.id_column, job.input_columns, task, writer.write_batch,
        )  # fmt: skip
    check_duplicates(check, temporary, job.id_column)
    os.replace(temporary, index)
    return check


def _remembered(check: InputCheck) -> dict[str, Any]:
    fields = asdict(check)
    fields.pop("files")
    return fields


def _check(files: list[Path], remembered: dict[str, Any]) -> InputCheck:
    return InputCheck(files, **remembered["check"])
