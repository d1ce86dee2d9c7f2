"""Splitting one job over several processes or machines: ``--shard I/N`` does the rows whose
id hashes to shard I of N. The hash is CRC-32 of the id's UTF-8 bytes: stable across runs,
machines and Python versions, so a shard resumes the same rows it started."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import polars as pl

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
        return self.holds_key(zlib.crc32(row_id.encode()))

    def holds_key(self, key: int) -> bool:
        """Whether the row whose id has CRC-32 ``key`` is this shard's."""
        return key % self.count == self.index - 1

    def holds_keys(self, keys: pl.Series) -> pl.Series:
        """``holds_key`` for a column of CRC-32 keys (the input index's ``shard_key``)."""
        return keys % self.count == self.index - 1
