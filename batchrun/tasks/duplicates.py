"""Identical texts are sent once. The first row with a text leads; later rows follow it while
its request is out, or take its vector from a small cache once it is answered."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from batchrun.tasks.base import Item

REUSED_VECTORS = 1024
"""Answered texts whose vector is kept for later duplicates (4 KB each for bge-m3)."""


@dataclass(frozen=True, slots=True)
class Reuse:
    """A text answered before: its model and vector."""

    model: str
    vector: bytes


class Duplicates:
    """Routes each text: send it, follow a leader in flight, or reuse an answered vector."""

    def __init__(self, cache_size: int = REUSED_VECTORS) -> None:
        self._leaders: dict[bytes, Item] = {}
        self._answered: OrderedDict[bytes, Reuse] = OrderedDict()
        self._cache_size = cache_size
        self.saved = 0

    def route(self, item: Item) -> Reuse | Literal["send", "follow"]:
        item.digest = hashlib.blake2b(item.text.encode(), digest_size=16).digest()
        if (leader := self._leaders.get(item.digest)) is not None:
            leader.followers.append(item)
            self.saved += 1
            return "follow"
        if (answer := self._answered.get(item.digest)) is not None:
            self._answered.move_to_end(item.digest)
            self.saved += 1
            return answer
        self._leaders[item.digest] = item
        return "send"

    def settled(self, item: Item, answer: Reuse | None) -> list[Item]:
        """The leader ``item`` got its vector (or failed, ``None``): its followers."""
        self._leaders.pop(item.digest, None)
        if answer is not None:
            self._answered[item.digest] = answer
            if len(self._answered) > self._cache_size:
                self._answered.popitem(last=False)
        return item.followers
