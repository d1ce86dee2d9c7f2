"""Round robin between batches: every batch (and the passed-through requests) gets a ``Pacer``
of its own for each model, all drawing from one ``FairSlots`` per model.

A ``Pacer`` holds its lock while it waits for a slot, so each batch has at most one waiter
here; waiters are served in the order they came (``asyncio.Lock`` wakes its oldest waiter), so
a batch that just got a slot queues behind every other batch: round robin, whatever the
number of requests each keeps in flight. The slots themselves come from the model's one slot
source, in this process (``LocalSlots``) or the team's Redis (``TeamSlots``), so the batches
together pace to the model's limit and each gets an equal share of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from batchrun.service.pacing import LocalSlots, Pacer, SlotSource


class FairSlots:
    """One model's slot source, shared in turn by its waiters (see ``pacing.SlotSource``)."""

    def __init__(self, source: SlotSource) -> None:
        self._source = source
        self._turn = asyncio.Lock()
        self._waiting = 0

    async def take(self, interval_s: float) -> None:
        self._waiting += 1
        try:
            async with self._turn:
                await self._source.take(interval_s)
        finally:
            self._waiting -= 1

    def expected_wait(self) -> float:
        return self._source.expected_wait()


class SharedPacing:
    """The models' fair slot sources of one server; ``pacer_for`` makes a batch's pacers."""

    def __init__(self, source: Callable[[str], SlotSource] = lambda model: LocalSlots()) -> None:
        self._source = source
        self._models: dict[str, FairSlots] = {}

    def slots(self, model: str) -> FairSlots:
        if model not in self._models:
            self._models[model] = FairSlots(self._source(model))
        return self._models[model]

    def pacer(self, model: str, rps: float) -> Pacer:
        """A new pacer (one batch's adaptive rate) over the model's shared slots."""
        return Pacer(rps, self.slots(model))
