"""A rejection the whole job gets, told apart from a row's own.

A 400 normally fails the rows of its request and the run goes on: one text is too long, one
prompt is malformed. But when a model's first requests are all rejected with the same message
(``max_tokens = -5``, or a parameter the gateway's provider does not take), every row would
fail the same way: a million failing requests. ``RejectionWatch`` stops the job instead, after
``FIRST_REJECTIONS`` requests that could not be split further (a packed embeddings request is
split to find the texts at fault: its single texts count, not each half on the way), quoting
the service and naming the ``[params]`` keys its message mentions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from batchrun.errors import JobError, RowError

FIRST_REJECTIONS = 8


class JobRejected(JobError):
    """The service rejects every request of the job: the job file must change (exit 2)."""


class RejectionWatch:
    """Counts, per model, the rejections before its first answer."""

    def __init__(self, params: Mapping[str, Any], limit: int = FIRST_REJECTIONS) -> None:
        self._params = params
        self._limit = limit
        self._answered: set[str] = set()
        self._rejected: dict[str, Counter[str]] = {}

    def answered(self, model: str) -> None:
        self._answered.add(model)
        self._rejected.pop(model, None)

    def rejected(self, model: str, error: RowError) -> None:
        """Count a request rejected for good; raise JobRejected when the job's are all."""
        if model in self._answered:
            return
        seen = self._rejected.setdefault(model, Counter())
        seen[str(error)] += 1
        if seen[str(error)] >= self._limit:
            raise JobRejected(self._explain(model, str(error)))

    def _explain(self, model: str, message: str) -> str:
        named = [key for key in self._params if key in message]
        keys = ", ".join(f"[params].{key} = {self._params[key]!r}" for key in named)
        fix = f"fix {keys}" if keys else "check [params] and the request's shape"
        return (
            f"{model} rejected the first {self._limit} requests, all with the same answer: "
            f"{message}; every row would fail the same way, so the run stopped: {fix}, then "
            "run again with --retry-failed (it sends the rows already written as failed again)"
        )
