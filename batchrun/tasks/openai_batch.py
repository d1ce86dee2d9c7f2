"""OpenAI batch files (``[input].format = "openai-batch"``): each input line is a whole request,
``{"custom_id", "method": "POST", "url": "/v1/chat/completions" | "/v1/embeddings", "body"}``,
as vLLM's run-batch, LiteLLM's batches and OpenAI's Batch API read them.

The body is sent as written (``[params]`` adds the keys a chat body lacks), to the model it
names, under that model's limit; ``custom_id`` is the row's id. The answer is kept as the
service sent it, so that ``batchrun export --format openai-batch`` gives OpenAI's batch output
back. A line that cannot be sent (an unknown url, a body that is not an object, no model)
makes the file unfit: ``validate`` and ``run`` name its line (exit 2), as for any input error.

Columns: model, url, response (the answer's JSON body), request_id, prompt_tokens,
completion_tokens, attempts, latency_ms, status, error, request_hash.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
import pyarrow as pa

from batchrun.hashing import SortedHashes
from batchrun.input.readers import Record
from batchrun.job import Job
from batchrun.output.archive import Archive
from batchrun.output.rows import Row, answer_fields
from batchrun.service.answers import RawAnswer
from batchrun.tasks.base import Built, Request, RequestDigest, RowsOf, Service

CHAT_URL, EMBEDDINGS_URL = "/v1/chat/completions", "/v1/embeddings"
NEEDS = {CHAT_URL: "messages", EMBEDDINGS_URL: "input"}
"""What a body must hold for each url."""
FIELDS = answer_fields(
    pa.field("url", pa.string()),
    pa.field("response", pa.string()),
    pa.field("request_id", pa.string()),
)


class BatchFileTask:
    """Lines of an OpenAI batch file to requests, answers kept as sent."""

    refuses_unsendable = True
    reuses_answers = False
    saved = 0

    def __init__(self, job: Job, schema: pa.Schema) -> None:
        self._params = dict(job.spec.params)
        self._rows = RowsOf(schema, job.spec.output.keep)
        self._digest = RequestDigest("openai-batch")

    @staticmethod
    def fields(job: Job) -> list[pa.Field]:
        return FIELDS

    def model_of(self, values: Mapping[str, Any]) -> str | None:
        body = values.get("body")
        model = body.get("model") if isinstance(body, dict) else None
        return model if isinstance(model, str) and model else None

    def problem(self, values: Mapping[str, Any]) -> str | None:
        url, method, body = values.get("url"), values.get("method", "POST"), values.get("body")
        if method != "POST":
            return f"method {method!r}: a batch line is a POST"
        if url not in NEEDS:
            return f"url {url!r}: use {CHAT_URL!r} or {EMBEDDINGS_URL!r}"
        if not isinstance(body, dict):
            return "body is not a JSON object"
        if self.model_of(values) is None:
            return "body has no model"
        if NEEDS[url] not in body or {"messages", "input"} <= set(body):
            return f"body: a request to {url} holds {NEEDS[url]!r} (and not the other one)"
        if body.get("stream"):
            return "body.stream: a batch line is answered whole; remove it"
        return None

    def request_hash(self, values: Mapping[str, Any]) -> int:
        body = values.get("body")
        text = (
            orjson.dumps(self._body(body), option=orjson.OPT_SORT_KEYS).decode()
            if isinstance(body, dict)
            else repr(body)
        )
        return self._digest.of(str(values.get("url")), text)

    def _body(self, body: dict[str, Any]) -> dict[str, Any]:
        """A chat line's body with ``[params]`` for the keys it lacks; an embeddings line's
        as written (chat sampling keys would be refused there)."""
        return {**self._params, **body} if "messages" in body else body

    def build(self, records: Iterable[Record]) -> Built:
        built = Built()
        for record, item in self._rows.sendable(records, self, built):
            body = self._body(record.values["body"])
            model = body.pop("model")
            built.requests.append(Request([item], body, model=model))
        return built

    def finish(self) -> Built:
        return Built()

    async def call(self, service: Service, model: str, body: dict[str, Any]) -> RawAnswer:
        return await service.post(_url(body).removeprefix("/v1"), model, body)

    def split(self, request: Request) -> list[Request]:
        return []

    def answered(
        self, request: Request, model: str, answer: RawAnswer, latency_s: float
    ) -> list[Row]:
        response = answer.body.decode("utf-8", "replace")
        own = {"url": _url(request.body), "response": response, "request_id": answer.request_id}
        return [self._rows.answered(request, model, answer, latency_s, **own)]

    def failed(self, request: Request, model: str | None, error: str) -> list[Row]:
        return [
            {**row, "url": _url(request.body)} for row in self._rows.failed(request, model, error)
        ]

    def requests_for(self, rows: int) -> int:
        return rows

    def reuse_answers(self, archive: Archive, hashes: SortedHashes) -> None:
        return None


def _url(body: Mapping[str, Any]) -> str:
    """The url of a checked body: chat bodies hold messages, embeddings bodies input."""
    return CHAT_URL if "messages" in body else EMBEDDINGS_URL
