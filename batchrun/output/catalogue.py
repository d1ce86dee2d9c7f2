"""The output's parts as the queries see them: each part's sequence number, whether it was
verified whole, whether compaction has seen it; damaged parts moved aside or named.

A part is verified once, when first seen (every page read against its checksum; the parts a
run seals are verified as written), and remembered in ``_parts.json`` by its name, size and
mtime: a part rewritten, replaced or touched is verified again. The file carries a checksum
of its own; a damaged or missing one only costs a verification of every part. A damaged
part is moved aside (``<name>.damaged``) with a warning when the caller may repair the output
(a run, under its lock): its rows are then done again. Otherwise it is an ``OutputError``
naming the file.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchrun.errors import OutputError, warn
from batchrun.output.layout import OutputLayout, read_json, write_json
from batchrun.output.parts import DamagedPart, check_part, move_aside, sequence_of

Entry = list[int]
"""``[size, mtime_ns, sequence, settled]`` of a part."""


def read_checked(path: Path) -> dict[str, Any] | None:
    """A JSON file written by ``write_checked``; None when missing, damaged or unchecked."""
    data = read_json(path)
    if data is None or not isinstance(checksum := data.pop("checksum", None), int):
        return None
    return data if checksum == _checksum(data) else None


def write_checked(path: Path, data: dict[str, Any]) -> None:
    """Write a small JSON file atomically with a checksum of its content."""
    write_json(path, {**data, "checksum": _checksum(data)})


def _checksum(data: dict[str, Any]) -> int:
    return zlib.crc32(orjson.dumps(data, option=orjson.OPT_SORT_KEYS))


@dataclass
class Catalogue:
    """The parts of an output, by name: size, mtime, sequence number, settled."""

    path: Path
    entries: dict[str, Entry]

    @classmethod
    def load(cls, path: Path, repair: bool = False) -> Catalogue:
        """Every part, verified (once), with its sequence number; a damaged one moved aside
        (``repair``) or an OutputError naming it."""
        layout = OutputLayout(path)
        known = cls.saved(path).entries
        entries: dict[str, Entry] = {}
        for part in layout.parts():
            try:
                entries[part.name] = _entry(part, known.get(part.name))
            except FileNotFoundError:  # another shard's compaction replaced it meanwhile
                continue
            except DamagedPart as damage:
                set_aside(damage, repair)
        catalogue = cls(path, entries)
        if entries != known:
            catalogue.save()
        return catalogue

    @classmethod
    def saved(cls, path: Path) -> Catalogue:
        """The catalogue as last saved, not checked against the parts."""
        return cls(path, (read_checked(OutputLayout(path).catalogue) or {}).get("parts", {}))

    @property
    def parts(self) -> list[Path]:
        return [self.path / name for name in sorted(self.entries)]

    @property
    def fresh(self) -> list[Path]:
        """Parts compaction has not seen yet."""
        return [self.path / name for name, entry in sorted(self.entries.items()) if not entry[3]]

    @property
    def sequences(self) -> dict[str, int]:
        return {str(self.path / name): entry[2] for name, entry in self.entries.items()}

    def next_sequence(self) -> int:
        return max((entry[2] for entry in self.entries.values()), default=0) + 1

    def settle(self) -> None:
        """Every part is now seen by compaction."""
        self.entries = {name: [*entry[:3], 1] for name, entry in self.entries.items()}
        self.save()

    def save(self) -> None:
        with contextlib.suppress(OSError):  # a read-only output: verified again next time
            write_checked(OutputLayout(self.path).catalogue, {"parts": self.entries})


def _entry(part: Path, known: Entry | None) -> Entry:
    stat = part.stat()
    if (
        isinstance(known, list)
        and len(known) == 4
        and known[:2] == [stat.st_size, stat.st_mtime_ns]
    ):
        return known
    check_part(part)
    return [stat.st_size, stat.st_mtime_ns, sequence_of(part), 0]


def set_aside(damage: DamagedPart, repair: bool) -> None:
    """Move a damaged part aside with a warning (``repair``), else name it in an error."""
    if not repair:
        raise OutputError(
            f"{damage.part}: {damage.args[0].split(': ', 1)[-1]}; run the job again: it moves "
            "the part aside and does its rows again"
        )
    aside = move_aside(damage.part)
    warn(f"{damage}: moved aside to {aside.name}; its rows will be done again")


def sealed(path: Path, part: Path, sequence: int) -> None:
    """Record a part this run just wrote (verified as written, not yet compacted)."""
    catalogue = Catalogue.saved(path)
    stat = part.stat()
    catalogue.entries[part.name] = [stat.st_size, stat.st_mtime_ns, sequence, 0]
    catalogue.save()


@contextlib.contextmanager
def checked_reading(path: Path) -> Iterator[None]:
    """Reading the rows of an output's parts: a page that fails its checksum (the part was
    damaged after it was verified) is an OutputError naming the part, and the part's record
    is forgotten, so that the next run verifies it again, moves it aside and redoes it."""
    try:
        yield
    except DamagedPart as damage:
        catalogue = Catalogue.saved(path)
        if catalogue.entries.pop(damage.part.name, None) is not None:
            catalogue.save()
        set_aside(damage, repair=False)
