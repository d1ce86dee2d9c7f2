"""OpenAI batch files (``[input].format = "openai-batch"``): each input line is a whole request,
``{"custom_id", "method": "POST", "url": "/v1/chat/completions" | "/v1/embeddings", "body"}``,
as vLLM's run-batch, LiteLLM's batches and OpenAI's Batch API read them (``method`` may be left
out: POST; the url may be written without ``/v1``, as LiteLLM and Azure do).

The body is sent as written (``[params]`` adds the keys a chat body lacks), to the model it
names, under that model's limit; ``custom_id`` is the row's id. The answer is kept as the
service sent it, so that ``batchrun export --format openai-batch`` gives OpenAI's batch output
back; a failed row keeps the service's error answer the same way. A line that cannot be sent
(not JSON, no string ``custom_id``, an unknown url, a body that is not an object, no model, a
model the endpoint does not serve) is named with its line by ``validate``; ``run`` refuses the
file (``[input].bad_lines = "fail-file"``, OpenAI's way) or writes each such line as a failed
row with its reason and runs the rest (``"fail-line"``, vLLM's way).

Columns: model, url, response (the answer's JSON body, or the service's error answer),
request_id, prompt_tokens, completion_tokens, attempts, latency_ms, status, error,
request_hash.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import orjson
import pyarrow as pa

from batchrun.errors import ApiError
from batchrun.input.readers import UNREADABLE, Record
from batchrun.job.spec import BATCH_FILE_COLUMNS, Job
from batchrun.output.archive import Archive
from batchrun.output.rows import OutputRow, answer_fields, failed_row
from batchrun.service.answers import RawAnswer
from batchrun.tasks.base import Built, Request, RequestDigest, RowsOf, Service
from batchrun.tasks.hashing import SortedHashes

CHAT_URL, EMBEDDINGS_URL = "/v1/chat/completions", "/v1/embeddings"
NEEDS = {CHAT_URL: "messages", EMBEDDINGS_URL: "input"}
"""What a body must hold for each url."""
BAD_LINE = "invalid_batch_line"
"""The error code of a line refused before sending (in the error body ``export`` writes)."""
FIELDS = answer_fields(
    pa.field("url", pa.string()),
    pa.field("response", pa.string()),
    pa.field("request_id", pa.string()),
)


def request_id() -> str:
    """An id for an answer that came without one (OpenAI's lines always carry one)."""
    return f"batchrun-{uuid.uuid4().hex}"


class BatchFileTask:
    """Lines of an OpenAI batch file to requests, answers kept as sent."""

    reuses_answers = False
    saved = 0

    def __init__(self, job: Job, schema: pa.Schema) -> None:
        self._params = dict(job.spec.params)
        self._rows = RowsOf(schema, job.spec.output.keep)
        self._digest = RequestDigest("openai-batch")
        self.refuses_unsendable = job.spec.input.bad_lines == "fail-file"
        self._unserved: dict[str, str] = {}
        self._errors: dict[int, ApiError] = {}
        """The last error of each request in flight (by its body's identity)."""

    @staticmethod
    def fields(job: Job) -> list[pa.Field]:
        return FIELDS

    def model_of(self, values: Mapping[str, Any]) -> str | None:
        body = values.get("body")
        model = body.get("model") if isinstance(body, dict) else None
        return model if isinstance(model, str) and model else None

    def unserved(self, models: Collection[str], served: Collection[str]) -> None:
        """Lines naming ``models`` (the endpoint serves only ``served``) are bad lines."""
        listed = ", ".join(served)
        self._unserved = {m: f"body.model {m!r}: not served (it serves: {listed})" for m in models}

    def problem(self, values: Mapping[str, Any]) -> str | None:
        fault = self._fault(values)
        return None if fault is None else fault[1]

    def _fault(self, values: Mapping[str, Any]) -> tuple[str | None, str] | None:
        """The field at fault in a line (OpenAI's ``param``) and what is wrong, or None."""
        if (unreadable := values.get(UNREADABLE)) is not None:
            return None, f"{unreadable}; a line is one JSON object"
        if (wrong := _custom_id_problem(values.get(BATCH_FILE_COLUMNS[0]))) is not None:
            return BATCH_FILE_COLUMNS[0], wrong
        method, body = values.get("method"), values.get("body")
        if method is not None and method != "POST":
            return "method", f"method {method!r}: a batch line is a POST (or has no method)"
        if (url := _url_of(values)) not in NEEDS:
            return "url", f"url {values.get('url')!r}: use {CHAT_URL!r} or {EMBEDDINGS_URL!r}"
        if not isinstance(body, dict):
            return "body", "body is not a JSON object"
        if (model := self.model_of(values)) is None:
            return "body.model", "body has no model"
        if NEEDS[url] not in body or {"messages", "input"} <= set(body):
            return "body", f"body: a request to {url} holds {NEEDS[url]!r} (and not the other one)"
        if body.get("stream"):
            return "body.stream", "body.stream: a batch line is answered whole; remove it"
        if model in self._unserved:
            return "body.model", self._unserved[model]
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
        for record in records:
            item = self._rows.item(record, self.request_hash(record.values))
            if (fault := self._fault(record.values)) is None:
                body = self._body(record.values["body"])
                model = body.pop("model")
                built.requests.append(Request([item], body, model=model))
                continue
            param, reason = fault
            error = f"{record.where}: {reason}; not sent"
            answer = {"message": error, "type": "invalid_request_error", "param": param}
            row = failed_row(self._rows.head(item), None, error, 0)
            row |= {"url": _url_of(record.values), "request_id": request_id()}
            row["response"] = orjson.dumps({"error": {**answer, "code": BAD_LINE}}).decode()
            built.rows.append(row)
        return built

    def finish(self) -> Built:
        return Built()

    async def call(self, service: Service, model: str, body: dict[str, Any]) -> RawAnswer:
        try:
            return await service.post(_url(body).removeprefix("/v1"), model, body)
        except ApiError as error:
            self._errors[id(body)] = error
            raise

    def split(self, request: Request) -> list[Request]:
        return []

    def answered(
        self, request: Request, model: str, answer: RawAnswer, latency_s: float
    ) -> list[OutputRow]:
        self._errors.pop(id(request.body), None)
        response = answer.body.decode("utf-8", "replace")
        own = {"url": _url(request.body), "response": response}
        own["request_id"] = answer.request_id or request_id()
        return [self._rows.answered(request, model, answer, latency_s, **own)]

    def failed(self, request: Request, model: str | None, error: str) -> list[OutputRow]:
        """The failed row keeps the service's error answer (its body as sent: a machine
        ``code`` such as ``context_length_exceeded`` survives) and request id."""
        last = self._errors.pop(id(request.body), None)
        answer = last.answer if last is not None else None
        own = {
            "url": _url(request.body),
            "response": answer.decode("utf-8", "replace") if answer else None,
            "request_id": (last.request_id if last else None) or request_id(),
        }
        return [{**row, **own} for row in self._rows.failed(request, model, error)]

    def requests_for(self, rows: int) -> int:
        return rows

    max_answer_tokens = None
    """Each line's body sets its own."""

    def reuse_answers(self, archive: Archive, hashes: SortedHashes) -> None:
        return None


def _custom_id_problem(custom_id: object) -> str | None:
    if isinstance(custom_id, str) and custom_id:
        return None
    if custom_id is None:
        return "no custom_id: give every line a unique string custom_id"
    if isinstance(custom_id, int | float) and not isinstance(custom_id, bool):
        return f'custom_id {custom_id!r} is a number: write it as a string, "{custom_id}"'
    return f"custom_id {custom_id!r}: a custom_id is a non-empty string"


def _url_of(values: Mapping[str, Any]) -> str | None:
    """A line's url, ``/v1`` added where it is left out (``/chat/completions``)."""
    url = values.get("url")
    if isinstance(url, str) and f"/v1{url}" in NEEDS:
        return f"/v1{url}"
    return url if isinstance(url, str) else None


def _url(body: Mapping[str, Any]) -> str:
    """The url of a checked body: chat bodies hold messages, embeddings bodies input."""
    return CHAT_URL if "messages" in body else EMBEDDINGS_URL
