"""Input rows become request bodies: chat messages from templates, packed embedding inputs.

A ``Request`` carries the rows it answers for and a body without ``model``: the scheduler picks
the model. A row that cannot make a request (its text is empty or missing) is returned as
unsendable and costs no request.

Embeddings are packed: up to ``batch_size`` inputs per request, and with ``batch_tokens`` no more
than that many estimated tokens (characters / 3) per request, so the rate limit, which counts
requests, is spent on as many texts as possible. Identical texts are sent once (``Duplicates``):
a later row with the same text follows the first one and gets its vector.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from batchrun.job import Job
from batchrun.sources import Record

CHARS_PER_TOKEN = 3
REUSED_VECTORS = 4096
"""Answered texts whose vector is kept for later duplicates (4 KB each for bge-m3)."""


@dataclass(slots=True, eq=False)
class Item:
    """One input row on its way through the runner."""

    id: str
    kept: dict[str, Any]
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


@dataclass
class Built:
    """What a batch of records turned into."""

    requests: list[Request] = field(default_factory=list)
    unsendable: list[tuple[Item, str]] = field(default_factory=list)
    """Rows that cannot make a request, and why."""
    reused: list[tuple[Item, str, bytes]] = field(default_factory=list)
    """Rows whose text was answered before: (row, model, vector)."""


class Duplicates:
    """Identical texts are sent once. The first row with a text leads; later ones follow it
    while its request is out, or take its vector from a small cache once it is answered."""

    def __init__(self, cache_size: int = REUSED_VECTORS) -> None:
        self._leaders: dict[bytes, Item] = {}
        self._answered: OrderedDict[bytes, tuple[str, bytes]] = OrderedDict()
        self._cache_size = cache_size
        self.saved = 0

    def route(self, item: Item, built: Built) -> bool:
        """True when ``item`` must be sent; otherwise it follows a leader or is answered."""
        item.digest = hashlib.blake2b(item.text.encode(), digest_size=16).digest()
        if (leader := self._leaders.get(item.digest)) is not None:
            leader.followers.append(item)
        elif (answer := self._answered.get(item.digest)) is not None:
            self._answered.move_to_end(item.digest)
            built.reused.append((item, *answer))
        else:
            self._leaders[item.digest] = item
            return True
        self.saved += 1
        return False

    def settled(self, item: Item, model: str | None, vector: bytes | None) -> list[Item]:
        """The leader ``item`` got its vector (or failed, ``None``): its followers."""
        self._leaders.pop(item.digest, None)
        if vector is not None and model is not None:
            self._answered[item.digest] = (model, vector)
            if len(self._answered) > self._cache_size:
                self._answered.popitem(last=False)
        return item.followers


class PayloadBuilder:
    """Turns batches of Records into Requests for one job; packs embeddings across batches."""

    def __init__(self, job: Job, duplicates: Duplicates | None = None) -> None:
        self._job = job
        self._keep = job.spec.output.keep
        prompt = job.spec.prompt
        self._system = prompt.system if prompt else None
        self._user = prompt.user if prompt else ""
        self._params = dict(job.spec.params)
        self._text_columns = job.text_columns
        run = job.spec.run
        self._batch_size = run.batch_size
        self._batch_tokens = run.batch_tokens
        self.duplicates = duplicates or Duplicates()
        self._packed: list[Item] = []
        self._packed_tokens = 0

    def build(self, records: Iterable[Record]) -> Built:
        """Requests for ``records``; embeddings still being packed wait for the next call."""
        built = Built()
        for record in records:
            item = Item(record.id, {name: record.values.get(name) for name in self._keep})
            empty = [
                name
                for name in self._text_columns
                if not isinstance(value := record.values.get(name), str) or not value.strip()
            ]
            if empty:
                error = f"{record.where}: column {empty[0]!r} is empty or not text; not sent"
                built.unsendable.append((item, error))
            elif self._job.kind == "chat":
                built.requests.append(Request([item], self._chat_body(record)))
            else:
                item.text = record.values[self._job.spec.input.text]
                if self.duplicates.route(item, built):
                    self._pack(item, built)
        return built

    def finish(self) -> Built:
        """The last, partly filled embeddings request."""
        built = Built()
        self._close_pack(built)
        return built

    def _chat_body(self, record: Record) -> dict[str, Any]:
        messages = []
        if self._system:
            messages.append({"role": "system", "content": self._system.format_map(record.values)})
        messages.append({"role": "user", "content": self._user.format_map(record.values)})
        return {"messages": messages, **self._params}

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
            body = {"input": [item.text for item in self._packed], **self._params}
            built.requests.append(Request(self._packed, body))
        self._packed, self._packed_tokens = [], 0
