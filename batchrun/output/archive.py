"""Answers already in the output, found by the hash of the request they answered: a text
embedded once (same model and params) is never paid for again, under any id, in any run."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from batchrun.output.layout import OutputLayout
from batchrun.output.rows import OK, REQUEST_HASH


class Archive:
    """Looks answers up in an output's parts by request hash."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def find(self, hashes: Iterable[int], columns: list[str]) -> dict[int, dict[str, object]]:
        """For each hash answered ok in the output, ``columns`` of one such row."""
        wanted = pa.array(sorted(set(hashes)), REQUEST_HASH.type)
        parts = OutputLayout(self._path).parts()
        if not parts or not len(wanted):
            return {}
        import pyarrow.dataset as ds  # loaded when used: 17 MB that most runs do without

        dataset = ds.dataset([str(part) for part in parts], format="parquet")
        found = (pc.field(REQUEST_HASH.name).isin(wanted)) & (pc.field("status") == OK)
        table = dataset.to_table(columns=[REQUEST_HASH.name, *columns], filter=found)
        rows: dict[int, dict[str, object]] = {}
        for row in table.to_pylist():
            rows.setdefault(int(row.pop(REQUEST_HASH.name)), row)
        return rows
