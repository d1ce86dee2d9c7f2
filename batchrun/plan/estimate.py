"""What the rows left to do will cost, said by ``validate`` before any request.

Tokens in are estimated as characters / ``CHARS_PER_TOKEN`` (``batchrun.tasks.base``),
averaged over up to ``SAMPLE`` of the rows to do and scaled to all of them; tokens out are at
most the task's ``max_answer_tokens`` per request (chat: ``max_tokens``; unknown without it);
the cost follows from ``[pricing]``.
"""

from __future__ import annotations

from pathlib import Path

from batchrun.input.readers import RecordReader
from batchrun.job.spec import Job
from batchrun.plan.diff import Changes
from batchrun.tasks.base import CHARS_PER_TOKEN

SAMPLE = 1_000


def estimate_line(
    job: Job, files: list[Path], changes: Changes, requests: int, max_answer_tokens: int | None
) -> str:
    """``estimate: about N tokens in ...; cost about C`` for the rows left to do, in
    ``requests`` requests whose answers take at most ``max_answer_tokens`` each (None: no
    bound known)."""
    if not changes.todo_count:
        return "estimate: nothing left to do"
    sample = changes.todo.first(SAMPLE)
    chars = rows = 0
    for records in RecordReader(files, job.id_column, job.input_columns, only=sample):
        for record in records:
            rows += 1
            chars += sum(len(str(record.values.get(name) or "")) for name in job.text_columns)
    tokens_in = round(chars / CHARS_PER_TOKEN / max(rows, 1) * changes.todo_count)
    tokens_out = None if max_answer_tokens is None else requests * max_answer_tokens
    line = f"estimate: about {tokens_in:,} tokens in "
    line += f"(characters / {CHARS_PER_TOKEN}, from {rows:,} rows to do)"
    line += f", at most {tokens_out:,} out (max_tokens)" if tokens_out is not None else ""
    return line + _cost(job, tokens_in, tokens_out)


def _cost(job: Job, tokens_in: int, tokens_out: int | None) -> str:
    prices = [job.prices[m] for m in job.models if m in job.prices]
    if not prices:
        return ""
    per_in = max(price[0] for price in prices)  # a pool: the dearest model, to be safe
    per_out = max(price[1] for price in prices)
    low = tokens_in * per_in / 1e6
    if tokens_out is None:
        return f"; cost from {low:.4f} by [pricing], plus the answers'"
    return f"; cost at most {low + tokens_out * per_out / 1e6:.4f} by [pricing]"
