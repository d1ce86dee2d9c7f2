"""Splitting one job over several processes or machines: ``--shard I/N`` does the rows whose
id hashes to shard I of N. The hash is CRC-32 of the id's UTF-8 bytes: stable across runs,
machines and Python versions, so a shard resumes the same rows it started."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from batchrun.errors import JobError


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match or not 1 <= int(match[1]) <= int(match[2]):
            raise JobError(f"--shard {text}: write I/N with 1 <= I <= N, e.g. --shard 2/4")
        return cls(int(match[1]), int(match[2]))

    @property
    def name(self) -> str:
        """The shard's tag in file names: ``s2of4``."""
        return f"s{self.index}of{self.count}"

    def holds(self, row_id: str) -> bool:
        return shard_key(row_id) % self.count == self.index - 1

    def holds_sql(self, column: str) -> str:
        """``holds`` as a SQL condition on a column of ``shard_key`` values."""
        return f"{column} % {self.count} = {self.index - 1}"


def shard_key(row_id: str) -> int:
    """The CRC-32 of an id's UTF-8 bytes: which shard holds it (``key % N``)."""
    return zlib.crc32(row_id.encode())
