"""Input rows become request bodies: chat messages from templates, packed embedding inputs.

A ``Request`` carries the rows it answers for and a body without ``model``: the scheduler picks
the model. A row that cannot make a request (its text is empty or missing) becomes a failed
``Outcome`` at once and costs no request.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from batchrun.job import Job
from batchrun.sources import Record


@dataclass(slots=True)
class Item:
    """One input row on its way through the runner: its id, kept columns and text."""

    id: str
    kept: dict[str, Any]
    text: str = ""


@dataclass(slots=True)
class Request:
    """One API call to make: the rows it answers and its body (``model`` is added later)."""

    items: list[Item]
    body: dict[str, Any]
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


Unsendable = tuple[Item, str]
"""A row that cannot make a request, and why."""


class PayloadBuilder:
    """Turns batches of Records into Requests for one job."""

    def __init__(self, job: Job) -> None:
        self._job = job
        self._keep = job.spec.output.keep
        prompt = job.spec.prompt
        self._system = prompt.system if prompt else None
        self._user = prompt.user if prompt else ""
        self._params = dict(job.spec.params)
        self._text_columns = job.text_columns

    def build(self, records: Iterable[Record]) -> tuple[list[Request], list[Unsendable]]:
        """Requests for the rows that can be sent, and the rows that cannot (empty text)."""
        if self._job.kind == "embeddings":
            return self._embedding_requests(records)
        return self._chat_requests(records)

    def _item(self, record: Record) -> Item:
        return Item(record.id, {name: record.values.get(name) for name in self._keep})

    def _empty_columns(self, record: Record) -> list[str]:
        return [
            name
            for name in self._text_columns
            if not isinstance(value := record.values.get(name), str) or not value.strip()
        ]

    def _chat_requests(self, records: Iterable[Record]) -> tuple[list[Request], list[Unsendable]]:
        requests: list[Request] = []
        unsendable: list[Unsendable] = []
        for record in records:
            item = self._item(record)
            empty = self._empty_columns(record)
            if empty:
                unsendable.append((item, _empty_error(record, empty[0])))
                continue
            messages = []
            if self._system:
                messages.append({"role": "system", "content": self._render(self._system, record)})
            messages.append({"role": "user", "content": self._render(self._user, record)})
            requests.append(Request([item], {"messages": messages, **self._params}))
        return requests, unsendable

    @staticmethod
    def _render(template: str, record: Record) -> str:
        return template.format_map(record.values)

    def _embedding_requests(
        self, records: Iterable[Record]
    ) -> tuple[list[Request], list[Unsendable]]:
        column = self._job.spec.input.text
        sendable: list[Item] = []
        unsendable: list[Unsendable] = []
        for record in records:
            item = self._item(record)
            if self._empty_columns(record):
                unsendable.append((item, _empty_error(record, column)))
            else:
                item.text = record.values[column]
                sendable.append(item)
        requests = [
            Request(chunk, {"input": [item.text for item in chunk], **self._params})
            for chunk in _chunks(sendable, self._job.spec.run.batch_size)
        ]
        return requests, unsendable


def _empty_error(record: Record, column: str) -> str:
    return f"{record.where}: column {column!r} is empty or not text; no request was sent"


def _chunks(items: list[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
