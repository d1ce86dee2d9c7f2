"""Embeddings: rows packed into requests, one vector per row.

Up to ``batch_size`` inputs go into one request, and with ``batch_tokens`` no more than that
many estimated tokens (characters / 3), so the rate limit, which counts requests, is spent on
as many texts as possible. Identical texts are sent once (``Duplicates``). A request the
service rejects (400) is split in halves until the inputs at fault are found. Vectors travel
as float32 bytes and go straight into the Arrow column. A text already embedded in the output
(same model and params, any id, any run) is not sent again: its vector is copied from there
(looked up in batches of ``REUSE_BATCH``).

Columns: model, embedding (fixed-size list of float32 when the model's size is known),
prompt_tokens (the request's count shared among its inputs by length), attempts, status, error,
request_hash.
"""

from __future__ import annotations

from array import array
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import pyarrow as pa

from batchrun.errors import RetryableError
from batchrun.input.readers import Record
from batchrun.job.catalog import MODELS
from batchrun.job.spec import Job
from batchrun.output.archive import Archive
from batchrun.output.rows import ATTEMPTS, ERROR, MODEL, OK, PROMPT_TOKENS, STATUS, OutputRow
from batchrun.service.answers import EmbeddingAnswer
from batchrun.tasks.base import (
    CHARS_PER_TOKEN,
    Built,
    Item,
    Request,
    RequestDigest,
    RowsOf,
    Service,
    missing_text,
)
from batchrun.tasks.duplicates import Duplicates, Reuse
from batchrun.tasks.hashing import SortedHashes

REUSE_BATCH = 1024


class EmbeddingsTask:
    """Rows to packed embeddings requests and back."""

    def __init__(self, job: Job, schema: pa.Schema) -> None:
        self._text = job.spec.input.text
        self._params = dict(job.spec.params)
        self._batch_size = job.spec.run.batch_size
        self._batch_tokens = job.spec.run.batch_tokens
        self._rows = RowsOf(schema, job.spec.output.keep)
        self._digest = RequestDigest(job.models, self._params)
        self._dimensions: int | None = getattr(schema.field("embedding").type, "list_size", None)
        self._duplicates = Duplicates()
        self._packed: list[Item] = []
        self._packed_tokens = 0
        self._archive: Archive | None = None
        self.reused = 0
        self._reusable = SortedHashes()
        self._deferred: list[Item] = []

    reuses_answers = True

    def reuse_answers(self, archive: Archive, hashes: SortedHashes) -> None:
        self._archive, self._reusable = archive, hashes

    @property
    def saved(self) -> int:
        return self._duplicates.saved + self.reused

    @staticmethod
    def fields(job: Job) -> list[pa.Field]:
        dims = {MODELS[m].dimensions for m in job.models if m in MODELS}
        dim = dims.pop() if len(dims) == 1 else None
        vector = pa.list_(pa.float32(), dim) if dim else pa.list_(pa.float32())
        return [MODEL, pa.field("embedding", vector), PROMPT_TOKENS, ATTEMPTS, STATUS, ERROR]

    def build(self, records: Iterable[Record]) -> Built:
        built = Built()
        for record, item in self._rows.sendable(records, self, built):
            item.text = record.values[self._text]
            if item.request_hash in self._reusable:
                self._deferred.append(item)
                if len(self._deferred) >= REUSE_BATCH:
                    self._reuse(built)
            else:
                self._route(item, built)
        return built

    def _route(self, item: Item, built: Built) -> None:
        route = self._duplicates.route(item)
        if isinstance(route, Reuse):
            built.rows.append(self._row(item, route.model, route.vector, 0, 0))
        elif route == "send":
            self._pack(item, built)

    def _reuse(self, built: Built) -> None:
        """Rows whose text the output already holds: copy the vector (or send, if it went)."""
        deferred, self._deferred = self._deferred, []
        assert self._archive is not None
        found = self._archive.find((item.request_hash for item in deferred), ["model", "embedding"])
        for item in deferred:
            answer = found.get(item.request_hash)
            if answer is None:
                self._route(item, built)
                continue
            numbers = answer["embedding"]
            assert isinstance(numbers, list)
            vector = array("f", numbers).tobytes()
            built.rows.append(self._row(item, str(answer["model"]), vector, 0, 0))
            self.reused += 1

    def request_hash(self, values: Mapping[str, Any]) -> int:
        """The digest of one text's request: the model, the text, the params (not the pack
        it travels in)."""
        text = values.get(self._text)
        return self._digest.of(text if isinstance(text, str) else str(text))

    refuses_unsendable = False

    def model_of(self, values: Mapping[str, Any]) -> str | None:
        return None

    def unserved(self, models: Collection[str], served: Collection[str]) -> None:
        return None  # the job file names the model, and the run checks it before any row

    def problem(self, values: Mapping[str, Any]) -> str | None:
        return missing_text(values, (self._text,))

    def finish(self) -> Built:
        built = Built()
        if self._deferred:
            self._reuse(built)
        self._close_pack(built)
        return built

    def _pack(self, item: Item, built: Built) -> None:
        tokens = len(item.text) // CHARS_PER_TOKEN + 1
        limit = self._batch_tokens
        if self._packed and limit is not None and self._packed_tokens + tokens > limit:
            self._close_pack(built)
        self._packed.append(item)
        self._packed_tokens += tokens
        if len(self._packed) >= self._batch_size:
            self._close_pack(built)

    def _close_pack(self, built: Built) -> None:
        if self._packed:
            built.requests.append(Request(self._packed, self._body(self._packed)))
        self._packed, self._packed_tokens = [], 0

    def _body(self, items: list[Item]) -> dict[str, Any]:
        return {"input": [item.text for item in items], **self._params}

    async def call(self, service: Service, model: str, body: dict[str, Any]) -> EmbeddingAnswer:
        """The answer's vectors, each of the model's size: another size is malformed
        (retried, then the rows fail with the reason)."""
        answer = await service.embed(model, body)
        sizes = {len(vector) // 4 for vector in answer.vectors}
        wrong = sorted(sizes - {self._dimensions}) if self._dimensions else []
        if wrong:
            raise RetryableError(
                f"the service sent {wrong[0]} numbers per vector, not {self._dimensions}"
            )
        return answer

    def split(self, request: Request) -> list[Request]:
        if len(request.items) == 1:
            return []
        middle = len(request.items) // 2
        halves = request.items[:middle], request.items[middle:]
        return [
            Request(items, {**request.body, **self._body(items)}, request.attempts)
            for items in halves
        ]

    def answered(
        self, request: Request, model: str, answer: EmbeddingAnswer, latency_s: float
    ) -> list[OutputRow]:
        shares = _token_shares(answer.prompt_tokens, [item.text for item in request.items])
        rows = []
        for item, vector, tokens in zip(request.items, answer.vectors, shares, strict=True):
            rows.append(self._row(item, model, vector, tokens, request.attempts))
            for follower in self._duplicates.settled(item, Reuse(model, vector)):
                rows.append(self._row(follower, model, vector, 0, 0))
        return rows

    def failed(self, request: Request, model: str | None, error: str) -> list[OutputRow]:
        rows = self._rows.failed(request, model, error)
        followers = [f for item in request.items for f in self._duplicates.settled(item, None)]
        rows += self._rows.failed(Request(followers, {}), model, error)
        return rows

    def requests_for(self, rows: int) -> int:
        return -(-rows // self._batch_size)

    max_answer_tokens = None
    """An embedding is not counted in tokens out."""

    def _row(
        self, item: Item, model: str, vector: bytes, tokens: int | None, attempts: int
    ) -> OutputRow:
        return {
            **self._rows.head(item),
            "model": model,
            "embedding": vector,
            "prompt_tokens": tokens,
            "attempts": attempts,
            "status": OK,
            "error": None,
        }


def _token_shares(total: int | None, texts: list[str]) -> list[int | None]:
    """A packed request's prompt tokens shared among its inputs by length."""
    if total is None:
        return [None] * len(texts)
    length = sum(len(t) for t in texts) or 1
    return [round(total * len(t) / length) for t in texts]
