"""Chat: one row, one request. The body is the job's ``[prompt]`` templates rendered over the
row's columns (a system message when ``system`` is set, then the user message) plus
``[params]``; the answer's content (``<think>`` split off into ``reasoning``) is the row.

Columns: model, content, reasoning, finish_reason, prompt_tokens, completion_tokens,
attempts, latency_ms, status, error, request_hash.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from batchrun.input.readers import Record
from batchrun.job import Job
from batchrun.output.archive import Archive
from batchrun.output.rows import (
    ATTEMPTS,
    ERROR,
    MODEL,
    OK,
    PROMPT_TOKENS,
    STATUS,
    Row,
)
from batchrun.service.answers import ChatAnswer
from batchrun.tasks.base import Built, Request, RequestDigest, RowsOf, Service

FIELDS = [
    MODEL,
    pa.field("content", pa.string()),
    pa.field("reasoning", pa.string()),
    pa.field("finish_reason", pa.string()),
    PROMPT_TOKENS,
    pa.field("completion_tokens", pa.int32()),
    ATTEMPTS,
    pa.field("latency_ms", pa.int32()),
    STATUS,
    ERROR,
]


class ChatTask:
    """Rows to chat completions and back."""

    def __init__(self, job: Job, schema: pa.Schema) -> None:
        assert job.spec.prompt is not None  # the job file's validation requires it
        self._system = job.spec.prompt.system
        self._user = job.spec.prompt.user
        self._params = dict(job.spec.params)
        self._stream = job.spec.run.stream
        self._rows = RowsOf(schema, job.spec.output.keep, job.text_columns)
        self._digest = RequestDigest(job.models, self._params, self._system is not None)
        self.saved = 0

    @staticmethod
    def fields(models: tuple[str, ...]) -> list[pa.Field]:
        return FIELDS

    def build(self, records: Iterable[Record]) -> Built:
        built = Built()
        for record in records:
            system, user = self._texts(record.values)
            item = self._rows.item(record, self._digest.of(system or "", user))
            if (row := self._rows.unsendable(record, item)) is not None:
                built.rows.append(row)
            else:
                built.requests.append(Request([item], self._body(system, user)))
        return built

    def request_hash(self, values: Mapping[str, Any]) -> int:
        system, user = self._texts(values)
        return self._digest.of(system or "", user)

    def finish(self) -> Built:
        return Built()

    def _texts(self, values: Mapping[str, Any]) -> tuple[str | None, str]:
        """The rendered system (None when the job has none) and user messages."""
        system = self._system.format_map(values) if self._system else None
        return system, self._user.format_map(values)

    def _body(self, system: str | None, user: str) -> dict[str, Any]:
        messages = [{"role": "system", "content": system}] if system is not None else []
        messages.append({"role": "user", "content": user})
        return {"messages": messages, **self._params}

    async def call(self, service: Service, model: str, body: dict[str, Any]) -> ChatAnswer:
        return await service.chat(model, body, stream=self._stream)

    def split(self, request: Request) -> list[Request]:
        return []  # one row per request: a rejected request is its row's fault

    def answered(
        self, request: Request, model: str, answer: ChatAnswer, latency_s: float
    ) -> list[Row]:
        (item,) = request.items
        return [
            {
                **self._rows.head(item),
                "model": model,
                "content": answer.content,
                "reasoning": answer.reasoning,
                "finish_reason": answer.finish_reason,
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": answer.completion_tokens,
                "attempts": request.attempts,
                "latency_ms": round(latency_s * 1000),
                "status": OK,
                "error": None,
            }
        ]

    def failed(self, request: Request, model: str | None, error: str) -> list[Row]:
        return self._rows.failed(request, model, error)

    def requests_for(self, rows: int) -> int:
        return rows

    reuses_answers = False
    """A chat answer is sampled: the same request may deserve a new one."""

    def reuse_answers(self, archive: Archive, hashes: set[int]) -> None:
        return None
