"""What an output directory is: the job that writes it, the shape of its requests, and the
version of batchrun's output format, recorded in ``_job.json``.

``FORMAT_VERSION`` names the layout of the output's files and columns. An output written by
an older batchrun is migrated on first use (``MIGRATIONS``: one step per version, each
idempotent); one written by a newer batchrun is refused, never silently misread.

Versions: 0 (batchrun before format versions: ``_job.json`` without ``format``), 1 (the same
files and columns, with ``format`` recorded), 2 (every row ends with ``request_hash``; rows
migrated from 1 hold null there and count as done for their ids until ``--redo``), 3 (the
output directory holds the parts only, the rest is in the state directory beside it: moved
there by ``OutputLayout`` before ``_job.json`` is read, ``output.layout``), 4 (what is done
is asked of a query engine: parts carry a sequence number and page checksums, the input index
is Parquet with the ids, the hand-written key files are gone; parts of format 3 keep their
bytes, are verified on first use and count as sequence 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from batchrun.errors import OutputError
from batchrun.output.done import output_counts
from batchrun.output.layout import OutputLayout, read_json, write_json
from batchrun.output.parts import write_batches
from batchrun.output.rows import FAILED, OK, REQUEST_HASH
from batchrun.version import WRITTEN_BY

FORMAT_VERSION = 4
Recorded = dict[str, Any]
"""What ``_job.json`` holds."""


def _from_1(path: Path) -> None:
    """Version 2 ends every row with ``request_hash``: older parts get a null one (each part
    rewritten atomically, so a crash midway leaves parts the next migration finishes)."""
    for part in OutputLayout(path).parts():
        if REQUEST_HASH.name not in pq.read_schema(part).names:
            table = pq.read_table(part)
            table = table.append_column(REQUEST_HASH, pa.nulls(table.num_rows, REQUEST_HASH.type))
            write_batches(part, table.schema, table.to_batches(), 0)


def _from_3(path: Path) -> None:
    """To version 4: the saved keys and the Arrow input index go (the index is made again, as
    Parquet); parts stay (sequence 0, ties broken by name: start time, as format 3 ordered)."""
    state = OutputLayout(path).state
    for pattern in ("_keys.arrows", "_keys-*.arrows", "._keys*.tmp", "_input-index.arrows"):
        for stale in state.glob(pattern):
            stale.unlink(missing_ok=True)


MIGRATIONS: dict[int, Callable[[Path], None]] = {
    0: lambda path: None,  # version 1 wrote the same files and columns, with the version
    1: _from_1,
    2: lambda path: None,  # every OutputLayout of the path moves the state (move_legacy_state)
    3: _from_3,
}  # MIGRATIONS[v] turns an output of format v into one of format v + 1


@dataclass(frozen=True)
class Identity:
    """What a run says of itself to the output it writes (checked by ``Store.open``)."""

    name: str
    kind: str
    fingerprint: str
    columns: list[str] | None = None
    redo: bool = False


def check_identity(path: Path, identity: Identity) -> None:
    """Refuse to mix rows of differently shaped requests in one output (unless ``redo``:
    every row is then sent again and replaces its old one, and the columns must not change),
    migrate an older output's format, and record the job's identity."""
    layout = OutputLayout(path)
    written = read_json(layout.job_file)
    if written is not None:
        _migrate(path, written.get("format", 0))
    parts = layout.parts() + layout.journals()  # a killed run's journal holds rows too
    if written and parts and written.get("fingerprint") != identity.fingerprint:
        _refuse_or_redo(path, written, parts, identity)
    wanted = {
        "name": identity.name,
        "kind": identity.kind,
        "fingerprint": identity.fingerprint,
        "format": FORMAT_VERSION,
        "written_by": WRITTEN_BY,
    }
    if written != wanted:  # (a migrated output's new format is written down too)
        try:
            path.mkdir(parents=True, exist_ok=True)
            write_json(layout.job_file, wanted)
        except OSError as exc:
            raise OutputError(f"{path}: cannot be used as the output directory ({exc})") from None


def _refuse_or_redo(path: Path, recorded: Recorded, parts: list[Path], identity: Identity) -> None:
    columns = identity.columns
    same_columns = columns is None or _column_names(parts[0]) == columns
    if identity.redo and same_columns:
        return
    if not same_columns:
        raise OutputError(
            f"{path}: holds rows of job {recorded.get('name')!r} with other columns (its "
            "[output].keep differs); run with --fresh to move that output aside, or set a new "
            "[output].path"
        )
    counts = output_counts(path)
    rows = counts[OK] + counts[FAILED]
    raise OutputError(
        f"{path}: holds {rows} rows of job {recorded.get('name')!r} made with other requests "
        "(its model, prompt, params or text column differ from this job's): all of them would "
        "be sent again. Run with --redo to redo them in this output (the old answers stay "
        "readable until each row is redone), --fresh to move that output aside and start "
        "over, or set a new [output].path"
    )


def _column_names(file: Path) -> list[str]:
    """The columns of a part (Parquet) or a journal (Arrow IPC stream)."""
    if file.suffix == ".parquet":
        return list(pq.read_schema(file).names)
    try:
        with pa.ipc.open_stream(str(file)) as reader:
            return list(reader.schema.names)
    except (pa.ArrowInvalid, OSError):
        return []


def _migrate(path: Path, version: object) -> None:
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise OutputError(
            f"{path}: written by a newer batchrun (output format {version!r}; this one reads "
            f"up to {FORMAT_VERSION}); upgrade batchrun, or set a new [output].path"
        )
    while version < FORMAT_VERSION:
        MIGRATIONS[version](path)
        version += 1
