"""Chat: one row, one request. The messages are the job's ``[prompt]`` templates rendered over
the row's columns (a system message when ``system`` is set, then the user message), or the
row's conversation (``[prompt].messages``, ``batchrun.tasks.conversations``); the body adds
``[params]`` and, for a structured job, the schema's ``response_format``. The answer's content
(``<think>`` split off into ``reasoning``) is the row; a structured answer also fills one
column per property of the schema (``batchrun.job.answerschema``), and an invalid one is re-asked.
An answer cut at ``max_tokens`` is a failed row unless ``[run].accept_cut`` (never for a
structured answer).

Columns: model, content, reasoning, finish_reason, prompt_tokens, completion_tokens,
attempts, latency_ms, status, error, [the schema's properties], request_hash.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

import orjson
import pyarrow as pa

from batchrun.input.readers import Record
from batchrun.job.answerschema import InvalidAnswer
from batchrun.job.spec import Job
from batchrun.output.archive import Archive
from batchrun.output.rows import OutputRow, answer_fields
from batchrun.service.answers import ChatAnswer
from batchrun.tasks.base import (
    Built,
    Reask,
    Request,
    RequestDigest,
    RowsOf,
    Service,
    missing_text,
)
from batchrun.tasks.conversations import Messages, conversation, with_system
from batchrun.tasks.hashing import SortedHashes

FIELDS = answer_fields(
    pa.field("content", pa.string()),
    pa.field("reasoning", pa.string()),
    pa.field("finish_reason", pa.string()),
)


class ChatTask:
    """Rows to chat completions and back."""

    def __init__(self, job: Job, schema: pa.Schema) -> None:
        assert job.spec.prompt is not None  # the job file's validation requires it
        prompt = job.spec.prompt
        self._system, self._user, self._column = prompt.system, prompt.user, prompt.messages
        self._params = dict(job.spec.params)
        self._answer = job.answer_schema
        if self._answer is not None:
            self._params["response_format"] = self._answer.response_format()
        limit = self._params.get("max_tokens")
        self.max_answer_tokens = limit if isinstance(limit, int) else None
        self._stream = job.spec.run.stream
        self._accept_cut = job.spec.run.accept_cut and self._answer is None
        self._rows = RowsOf(schema, job.spec.output.keep)
        self._text_columns = job.text_columns
        self._digest = RequestDigest(job.models, self._params, self._system is not None)
        self.saved = 0

    @staticmethod
    def fields(job: Job) -> list[pa.Field]:
        return FIELDS + (job.answer_schema.fields() if job.answer_schema else [])

    def build(self, records: Iterable[Record]) -> Built:
        built = Built()
        for record, item in self._rows.sendable(records, self, built):
            messages = self._messages(record.values)
            built.requests.append(Request([item], {"messages": messages, **self._params}))
        return built

    refuses_unsendable = False

    def model_of(self, values: Mapping[str, Any]) -> str | None:
        return None

    def unserved(self, models: Collection[str], served: Collection[str]) -> None:
        return None  # the job file names the model, and the run checks it before any row

    def problem(self, values: Mapping[str, Any]) -> str | None:
        if self._column is None:
            return missing_text(values, self._text_columns)
        if (problem := missing_text(values, self._text_columns[1:])) is not None:
            return problem  # a column of the system template
        try:
            conversation(values.get(self._column))
        except ValueError as exc:
            return f"column {self._column!r} {exc}"
        return None

    def request_hash(self, values: Mapping[str, Any]) -> int:
        system = self._system.format_map(values) if self._system else None
        if self._column is None:
            assert self._user is not None
            return self._digest.of(system or "", self._user.format_map(values))
        try:
            messages = with_system(conversation(values.get(self._column)), system)
        except ValueError:  # not sent: any stable digest
            return self._digest.of("unsendable", repr(values.get(self._column)))
        return self._digest.of(orjson.dumps(messages).decode())

    def finish(self) -> Built:
        return Built()

    def _messages(self, values: Mapping[str, Any]) -> Messages:
        system = self._system.format_map(values) if self._system else None
        if self._column is not None:
            return with_system(conversation(values.get(self._column)), system)
        assert self._user is not None
        user = [{"role": "user", "content": self._user.format_map(values)}]
        return with_system(user, system)

    async def call(self, service: Service, model: str, body: dict[str, Any]) -> ChatAnswer:
        return await service.chat(model, body, stream=self._stream)

    def split(self, request: Request) -> list[Request]:
        return []  # one row per request: a rejected request is its row's fault

    def answered(
        self, request: Request, model: str, answer: ChatAnswer, latency_s: float
    ) -> list[OutputRow]:
        if answer.finish_reason == "length" and not self._accept_cut:
            limit = self._params.get("max_tokens", "the service's default")
            error = f"answer cut at max_tokens = {limit}: raise [params].max_tokens"
            return self._rows.failed(request, model, error)
        values = self._structured(request, answer.content)
        own = {"content": answer.content, "reasoning": answer.reasoning}
        own["finish_reason"] = answer.finish_reason
        return [self._rows.answered(request, model, answer, latency_s, **own, **values)]

    def _structured(self, request: Request, content: str | None) -> dict[str, Any]:
        """The schema's columns of a valid answer; ``Reask`` for an invalid one."""
        if self._answer is None:
            return {}
        try:
            return self._answer.values(self._answer.parse(content))
        except InvalidAnswer as exc:
            messages = [
                *request.body["messages"],
                {"role": "assistant", "content": content or ""},
                {
                    "role": "user",
                    "content": f"{exc}. Answer again: only JSON that matches the schema.",
                },
            ]
            raise Reask(
                f"answer not valid against [output].schema: {exc}",
                {**request.body, "messages": messages},
            ) from None

    def failed(self, request: Request, model: str | None, error: str) -> list[OutputRow]:
        return self._rows.failed(request, model, error)

    def requests_for(self, rows: int) -> int:
        return rows

    reuses_answers = False
    """A chat answer is sampled: the same request may deserve a new one."""

    def reuse_answers(self, archive: Archive, hashes: SortedHashes) -> None:
        return None
