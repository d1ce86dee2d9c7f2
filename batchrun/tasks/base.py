"""What every request kind shares: the rows in flight (``Item``), one API call to make
(``Request``), what a batch of input records turns into (``Built``), and the ``Task`` protocol
that a request kind implements.

A task owns everything that differs by kind: its output columns, request bodies from rows
(templates, packing), the service call, whether a rejected request can be split, and turning an
answer into output rows. The sender and the scheduler see only this protocol.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import orjson
import pyarrow as pa

from batchrun.input.index import RowRules
from batchrun.input.readers import Record, has_text
from batchrun.output.archive import Archive
from batchrun.output.rows import OK, OutputRow, failed_row, kept_values
from batchrun.service.answers import ChatAnswer, EmbeddingAnswer, RawAnswer
from batchrun.service.ratelimits import Quota
from batchrun.tasks.hashing import SortedHashes

CHARS_PER_TOKEN = 3
"""Tokens counted before the service does, as characters / 3 (a rough rule: English runs near 4
characters a token, Russian nearer 2.5): embeddings' ``batch_tokens``, ``validate``'s estimate."""


@dataclass(slots=True, eq=False)
class Item:
    """One input row on its way through the runner."""

    id: str
    kept: dict[str, Any]
    request_hash: int
    """The digest of the request this row makes (``RequestDigest``)."""
    text: str = ""
    digest: bytes = b""
    followers: list[Item] = field(default_factory=list)
    """Later rows with the same text, answered by this row's request."""


@dataclass(slots=True)
class Request:
    """One API call to make: the rows it answers and its body (``model`` is added later)."""

    items: list[Item]
    body: dict[str, Any]
    attempts: int = 0
    model: str | None = None
    """The model this request must go to (a batch file's line names it); None: the job's."""
    reasks: int = 0
    """Times the answer was unusable and the model was asked again (``Reask``)."""


class Reask(Exception):
    """An answer the task cannot use (not valid against the job's schema): ``body`` asks the
    model again and says why. The sender sends it, up to ``[run].max_reasks`` times."""

    def __init__(self, reason: str, body: dict[str, Any]) -> None:
        super().__init__(reason)
        self.reason, self.body = reason, body
        self.model: str | None = None
        """The model that gave the answer (set by the sender)."""


@dataclass
class Built:
    """What a batch of records turned into: requests to send, and rows already decided
    (a row with no text to send fails without a request; a repeated text reuses a vector)."""

    requests: list[Request] = field(default_factory=list)
    rows: list[OutputRow] = field(default_factory=list)


class Answer(Protocol):
    @property
    def prompt_tokens(self) -> int | None: ...

    @property
    def completion_tokens(self) -> int | None: ...

    @property
    def quota(self) -> Quota | None: ...


AnswerT = TypeVar("AnswerT", bound=Answer)


class Service(Protocol):
    """What tasks call (``batchrun.service.client.Api``, or a test's fake)."""

    async def chat(
        self, model: str, body: dict[str, Any], *, stream: bool = False
    ) -> ChatAnswer: ...

    async def embed(self, model: str, body: dict[str, Any]) -> EmbeddingAnswer: ...

    async def post(self, path: str, model: str, body: dict[str, Any]) -> RawAnswer: ...


class Task(Protocol[AnswerT]):
    """One request kind."""

    @property
    def saved(self) -> int:
        """Rows that cost no request (a repeated text)."""
        ...

    def build(self, records: Iterable[Record]) -> Built:
        """Requests (and decided rows) for ``records``; a request still being packed waits."""
        ...

    def finish(self) -> Built:
        """What is left after the last record: the last, partly packed request."""
        ...

    async def call(self, service: Service, model: str, body: dict[str, Any]) -> AnswerT:
        """Send one request body to ``model``."""
        ...

    def split(self, request: Request) -> list[Request]:
        """A rejected request as smaller ones, to find the rows at fault; [] if it cannot."""
        ...

    def answered(
        self, request: Request, model: str, answer: AnswerT, latency_s: float
    ) -> list[OutputRow]:
        """The output rows of an answered request; ``Reask`` for an answer to ask again."""
        ...

    def failed(self, request: Request, model: str | None, error: str) -> list[OutputRow]:
        """The output rows of a request that failed for good."""
        ...

    def requests_for(self, rows: int) -> int:
        """How many requests ``rows`` rows take (for the plan ``validate`` prints)."""
        ...

    @property
    def max_answer_tokens(self) -> int | None:
        """The most tokens one answer may take (chat: the job's ``max_tokens``), or None when
        nothing here bounds it (for the estimate ``validate`` prints)."""
        ...

    def request_hash(self, values: Mapping[str, Any]) -> int:
        """The digest of the request a row with these column ``values`` makes."""
        ...

    def problem(self, values: Mapping[str, Any]) -> str | None:
        """Why a row with these column ``values`` cannot be sent (no text, a malformed
        conversation), or None."""
        ...

    def model_of(self, values: Mapping[str, Any]) -> str | None:
        """The model a row's request names (a batch file's line), or None: the job's."""
        ...

    def unserved(self, models: Collection[str], served: Collection[str]) -> None:
        """Rows naming ``models`` (a batch file's lines), which the endpoint does not serve
        (it serves ``served``), are not sent: ``problem`` says so."""
        ...

    @property
    def refuses_unsendable(self) -> bool:
        """Whether a row that cannot be sent makes the whole input unfit (a bad line of a
        batch file), rather than a failed row."""
        ...

    @property
    def reuses_answers(self) -> bool:
        """Whether an answer in the output serves every row making the same request."""
        ...

    def reuse_answers(self, archive: Archive, hashes: SortedHashes) -> None:
        """Rows making one of these requests take the answer from ``archive``."""
        ...


class RequestDigest:
    """A stable 64-bit digest of a row's request (a signed int64): the job's constant part
    (models, params, which templates) given once, then the row's rendered texts. The same
    request gives the same digest in every run, on every machine; blake2b, and each text's
    length before it, so that no two different requests collide by concatenation."""

    def __init__(self, *context: object) -> None:
        self._prefix = orjson.dumps(context, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)

    def of(self, *texts: str) -> int:
        parts = [self._prefix]
        for text in texts:
            data = text.encode("utf-8", "surrogatepass")
            parts += (len(data).to_bytes(8, "little"), data)
        digest = hashlib.blake2b(b"".join(parts), digest_size=8).digest()
        return int.from_bytes(digest, "little", signed=True)


def missing_text(values: Mapping[str, Any], columns: Sequence[str]) -> str | None:
    """The problem of a row whose ``columns`` do not all hold text, or None."""
    empty = next((name for name in columns if not has_text(values.get(name))), None)
    return None if empty is None else f"column {empty!r} is empty or not text"


class RowsOf:
    """Output rows of one job's schema: the part of a task that is the same for every kind."""

    def __init__(self, schema: pa.Schema, keep: Sequence[str]) -> None:
        self.schema = schema
        self._keep = keep

    def item(self, record: Record, request_hash: int) -> Item:
        kept = {name: record.values.get(name) for name in self._keep}
        return Item(record.id, kept, request_hash)

    def head(self, item: Item) -> OutputRow:
        """What every output row of ``item`` starts with: id, kept values, request hash."""
        kept = kept_values(item.kept, self.schema)
        return {"id": item.id, **kept, "request_hash": item.request_hash}

    def sendable(
        self, records: Iterable[Record], rules: RowRules, built: Built
    ) -> Iterator[tuple[Record, Item]]:
        """Each record that can be sent, with its item; a record that cannot (``problem``)
        becomes its failed row in ``built``, never a request."""
        for record in records:
            item = self.item(record, rules.request_hash(record.values))
            if (problem := rules.problem(record.values)) is None:
                yield record, item
            else:
                error = f"{record.where}: {problem}; not sent"
                built.rows.append(failed_row(self.head(item), None, error, 0))

    def answered(
        self, request: Request, model: str, answer: Answer, latency_s: float, **own: Any
    ) -> OutputRow:
        """The ok row of a request that answers one row: its head, the task's ``own``
        values, and the model, tokens, attempts and latency (``rows.answer_fields``)."""
        (item,) = request.items
        return {
            **self.head(item),
            "model": model,
            **own,
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "attempts": request.attempts,
            "latency_ms": round(latency_s * 1000),
            "status": OK,
            "error": None,
        }

    def failed(self, request: Request, model: str | None, error: str) -> list[OutputRow]:
        return [
            failed_row(self.head(item), model, error, request.attempts) for item in request.items
        ]
