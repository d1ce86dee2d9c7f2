"""A row's id as the input wrote it: a non-empty string or an integer, and an integer beyond
64 bits (which orjson reads as a float, rounded) named as written, never as ``1e+30``."""

from __future__ import annotations

import json
import re

from batchrun.errors import JobError

_INTEGER = re.compile(r"-?[0-9]+")


def row_id(value: object, where: str, line: bytes = b"", column: str = "") -> str:
    """The id of the row at ``where`` (``news.jsonl:12``) from its id column's ``value``;
    ``line`` (a JSONL line) shows a number as written."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    written = _as_written(line, column) if isinstance(value, float) else None
    if written is not None and _INTEGER.fullmatch(written):
        raise JobError(
            f"{where}: the id {written} is an integer beyond 64 bits (it would be read "
            f'rounded); write it as a string: "{written}"'
        )
    raise JobError(
        f"{where}: the id is {written or repr(value)}; "
        "every row needs a non-empty string or integer id"
    )


def _as_written(line: bytes, column: str) -> str | None:
    """A number in a JSONL line as its text, not as orjson read it: 10**30 is read as the
    float 1e+30 (orjson reads integers of 64 bits at most)."""
    try:
        row = json.loads(line, parse_int=str, parse_float=str, parse_constant=str)
    except ValueError:
        return None
    value = row.get(column) if isinstance(row, dict) else None
    return value if isinstance(value, str) else None
