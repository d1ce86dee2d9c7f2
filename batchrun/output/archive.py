"""Answers already in the output, found by the hash of the request they answered: a text
embedded once (same model and params) is never paid for again, under any id, in any run."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from batchrun.output.catalogue import set_aside
from batchrun.output.layout import OutputLayout
from batchrun.output.parts import DamagedPart, read_part
from batchrun.output.rows import OK, REQUEST_HASH


class Archive:
    """Looks answers up in an output's parts by request hash."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def find(self, hashes: Iterable[int], columns: list[str]) -> dict[int, dict[str, object]]:
        """For each hash answered ok in the output, ``columns`` of one such row (every page
        read verified: a part that fails is set aside, its rows done again next run)."""
        wanted = pa.array(sorted(set(hashes)), REQUEST_HASH.type)
        if not len(wanted) or not OutputLayout(self._path).parts():
            return {}
        found = (pc.field(REQUEST_HASH.name).isin(wanted)) & (pc.field("status") == OK)
        rows: dict[int, dict[str, object]] = {}
        for row in self._scan([REQUEST_HASH.name, *columns], found).to_pylist():
            rows.setdefault(int(row.pop(REQUEST_HASH.name)), row)
        return rows

    def _scan(self, columns: list[str], found: pc.Expression) -> pa.Table:
        import pyarrow.dataset as ds  # loaded when used: 17 MB that most runs do without

        parts = OutputLayout(self._path).parts()
        verified = ds.ParquetFragmentScanOptions(page_checksum_verification=True)
        kind = ds.ParquetFileFormat(default_fragment_scan_options=verified)
        try:
            return ds.dataset([str(p) for p in parts], format=kind).to_table(columns, filter=found)
        except (OSError, pa.ArrowException):  # a damaged part: which one? (then without it)
            for part in parts:
                try:
                    read_part(part, columns=columns, filters=found)
                except DamagedPart as damage:
                    set_aside(damage, repair=True)
                    return self._scan(columns, found)
            raise
