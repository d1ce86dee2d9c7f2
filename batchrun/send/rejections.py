"""A rejection the whole job gets, told apart from a row's own.

A 400 normally fails the rows of its request and the run goes on: one text is too long, one
prompt is malformed. But when a model's requests are rejected ``REJECTIONS_IN_A_ROW`` times in
a row with the same message and no answer between them (``max_tokens = -5``, or a parameter
the gateway's provider does not take), every row would fail the same way: a million failing
requests. ``RejectionWatch`` stops the job instead, quoting the service and naming the
``[params]`` keys its message mentions. Only requests that could not be split further count (a
packed embeddings request is split to find the texts at fault: its single texts count, not
each half on the way).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from batchrun.errors import JobError, RowError

REJECTIONS_IN_A_ROW = 8


class JobRejected(JobError):
    """The service rejects every request of the job: the job file must change (exit 2)."""


class RejectionWatch:
    """Counts, per model, the same rejection in a row since its last answer."""

    def __init__(self, params: Mapping[str, Any], limit: int = REJECTIONS_IN_A_ROW) -> None:
        self._params = params
        self._limit = limit
        self._streaks: dict[str, tuple[str, int]] = {}

    def answered(self, model: str) -> None:
        self._streaks.pop(model, None)

    def rejected(self, model: str, error: RowError) -> None:
        """Count a request rejected for good; raise JobRejected when the job's all are."""
        message = str(error)
        last, count = self._streaks.get(model, (message, 0))
        count = count + 1 if last == message else 1
        self._streaks[model] = (message, count)
        if count >= self._limit:
            raise JobRejected(self._explain(model, message))

    def _explain(self, model: str, message: str) -> str:
        named = [key for key in self._params if re.search(rf"\b{re.escape(key)}\b", message)]
        keys = ", ".join(f"[params].{key} = {self._params[key]!r}" for key in named)
        fix = f"fix {keys}" if keys else "check [params] and the request's shape"
        return (
            f"{model} rejected {self._limit} requests in a row, all with the same answer: "
            f"{message}; every row would fail the same way, so the run stopped: {fix}, then "
            "run again with --retry-failed (it sends the rows already written as failed again)"
        )
