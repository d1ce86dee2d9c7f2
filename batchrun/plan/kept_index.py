"""The input index kept beside the output: built by one pass over the input, and reused by every
later run for as long as the input files (their size and mtime) and the job's requests are
the same, and the index file is whole: its size and CRC-32 are remembered with it (a damaged
index is made again). Resuming a ten-million-row job then reads no input row that is already
done (see ``batchrun.plan.diff``). When the input files changed, the index is made again reusing
the entries of the lines it already holds (``input.build``).
"""

from __future__ import annotations

import contextlib
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from batchrun.errors import warn
from batchrun.input.build import build_index
from batchrun.input.checks import input_signature
from batchrun.input.index import InputCheck, whole_check
from batchrun.input.lines import HASHER
from batchrun.input.readers import StaleIndex
from batchrun.job.spec import Job
from batchrun.output.catalogue import read_checked, write_checked
from batchrun.output.layout import OutputLayout
from batchrun.tasks.base import Task

CHECK_VERSION = 5
"""The shape of the remembered whole-input check (2: rows that cannot be sent, with why;
3: the models the rows name; 4: a batch file's lines read leniently, up to 1,000 bad lines
named, and what makes a line bad as issue 25 says; 5: the index is Parquet, with its size
and CRC-32 and its lines' hashes)."""
CHECKED_BYTES = 1 << 24
"""The index is read this much at a time to check its CRC-32."""


@contextlib.contextmanager
def kept_index(
    job: Job, files: list[Path], output: Path, task: Task[Any]
) -> Iterator[tuple[Path, InputCheck]]:
    """The index of ``files`` for ``job`` and the whole-input check: remembered in the
    output directory when it exists, else made in a temporary directory for the block."""
    layout = OutputLayout(output)
    key = {
        "files": input_signature(files),
        "requests": job.fingerprint(),
        "check": CHECK_VERSION,
        "lines": HASHER,
    }
    remembered = read_checked(layout.input_file) or {}
    whole = _whole(layout.input_index, remembered.get("index"))
    if remembered.get("key") == key:
        if whole:
            with _removed_when_stale(layout):
                yield layout.input_index, InputCheck(files, **remembered["check"])
            return
        warn(f"{layout.input_index}: damaged or missing; made again from the input")
    earlier = layout.input_index if whole and _same_job(remembered.get("key"), key) else None
    if not output.is_dir():
        with tempfile.TemporaryDirectory(prefix="batchrun-index-") as directory:
            index = Path(directory) / layout.input_index.name
            yield index, _build(job, files, task, index)
        return
    check = _build(job, files, task, layout.input_index, earlier)
    if not check.duplicate_count:
        signature = _signature(layout.input_index)
        fields = {name: value for name, value in asdict(check).items() if name != "files"}
        write_checked(layout.input_file, {"key": key, "check": fields, "index": signature})
    yield layout.input_index, check


@contextlib.contextmanager
def _removed_when_stale(layout: OutputLayout) -> Iterator[None]:
    """A remembered index found out of step with the input (a row read at its place holds
    another id) is forgotten: the next run makes it anew."""
    try:
        yield
    except StaleIndex as exc:
        layout.input_file.unlink(missing_ok=True)
        raise StaleIndex(
            f"{exc}; {layout.input_index} is out of step with the input: it is removed, "
            "run again to make it anew (nothing is lost)"
        ) from None


def _signature(index: Path) -> list[int]:
    """The index file's size and CRC-32."""
    crc = 0
    with index.open("rb") as source:
        while chunk := source.read(CHECKED_BYTES):
            crc = zlib.crc32(chunk, crc)
    return [index.stat().st_size, crc]


def _whole(index: Path, remembered: object) -> bool:
    """Whether the index is as it was written."""
    try:
        return _signature(index) == remembered
    except OSError:
        return False


def _build(
    job: Job, files: list[Path], task: Task[Any], index: Path, earlier: Path | None = None
) -> InputCheck:
    """Write the index atomically (a killed pass leaves no half index); check the input."""
    build_index(files, job.id_column, job.input_columns, task, index, earlier)
    return whole_check(files, index)


def _same_job(remembered: object, key: dict[str, Any]) -> bool:
    """Whether an index was made for this job's requests (of other input files)."""
    return isinstance(remembered, dict) and {**remembered, "files": None} == {**key, "files": None}
