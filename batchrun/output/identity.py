"""What an output directory is: the job that writes it, the shape of its requests, and the
version of batchrun's output format, recorded in ``_job.json``.

``FORMAT_VERSION`` names the layout of the output's files and columns. An output written by
an older batchrun is migrated on first use (``MIGRATIONS``: one step per version, each
idempotent); one written by a newer batchrun is refused, never silently misread.

Versions: 0 (batchrun before format versions: ``_job.json`` without ``format``), 1 (the same
files and columns, with ``format`` recorded).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchrun.errors import OutputError
from batchrun.output.layout import OutputLayout, read_json, write_json

FORMAT_VERSION = 1
Identity = dict[str, Any]


def _from_0(path: Path, identity: Identity) -> Identity:
    """Version 0 wrote the same parts and columns: only the version is new."""
    return {**identity, "format": 1}


MIGRATIONS: dict[int, Callable[[Path, Identity], Identity]] = {0: _from_0}
"""``MIGRATIONS[v]`` turns an output of format ``v`` into one of format ``v + 1``."""


def check_identity(path: Path, name: str, kind: str, fingerprint: str) -> None:
    """Refuse to mix rows of differently shaped requests in one output, migrate an older
    output's format, and record the job's identity on first use."""
    layout = OutputLayout(path)
    recorded = read_json(layout.job_file)
    if recorded is not None:
        recorded = _migrated(path, recorded)
    if recorded and layout.parts() and recorded.get("fingerprint") != fingerprint:
        raise OutputError(
            f"{path}: holds rows of job {recorded.get('name')!r} made with other requests "
            "(its model, prompt, params, text column or kept columns differ from this job's); "
            "run with --fresh to move that output aside, or set a new [output].path"
        )
    wanted = {"name": name, "kind": kind, "fingerprint": fingerprint, "format": FORMAT_VERSION}
    if recorded != wanted:
        try:
            path.mkdir(parents=True, exist_ok=True)
            write_json(layout.job_file, wanted)
        except OSError as exc:
            raise OutputError(f"{path}: cannot be used as the output directory ({exc})") from None


def _migrated(path: Path, identity: Identity) -> Identity:
    version = identity.get("format", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise OutputError(
            f"{path}: written by a newer batchrun (output format {version!r}; this one reads "
            f"up to {FORMAT_VERSION}); upgrade batchrun, or set a new [output].path"
        )
    while version < FORMAT_VERSION:
        identity = MIGRATIONS[version](path, identity)
        version += 1
    return identity
