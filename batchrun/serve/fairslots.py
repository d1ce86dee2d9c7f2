"""Round robin between batches: every batch (and the passed-through requests) gets a ``Pacer``
of its own for each model, all reserving their send slots from one ``SharedSlots`` per model.

Each batch's job runs in a thread with an event loop of its own (a job's synchronous start,
reading and indexing its input, must not hold back the requests of the others: 20 ms late
puts three requests of a 2 RPS model in one second). So the slots are handed out as the team
limiter hands them out (``send.teampacing``), here under a thread lock: GCRA with a burst
of 1 by reservation, ``tat = max(tat, now); tat += interval``, and the caller sleeps until
its slot in its own loop. A ``Pacer`` holds its lock while it waits for a slot, so each batch
has at most one reservation out; slots go in the order they are asked for, so a batch that
just got one asks behind every other batch: round robin, whatever the number of requests
each keeps in flight, and together they pace to the model's limit.

With ``[limits].shared`` the batches' jobs draw from the team's Redis limiter themselves
(the same reservation, in Redis), and so does the passthrough.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from batchrun.clock import Clock, Sleep
from batchrun.send.pacing import Pacer, SlotSource


class SharedSlots:
    """One model's slots for every thread of the server."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tat = clock()

    def reserve(self, interval_s: float) -> float:
        """Take the next slot; the seconds until it, from now."""
        with self._lock:
            now = self._clock()
            slot = max(self._tat, now)
            self._tat = slot + interval_s
            return slot - now

    def expected_wait(self) -> float:
        return max(self._tat - self._clock(), 0.0)


class ReservedSlots:
    """A slot source over shared slots, for a pacer in any thread's loop."""

    def __init__(self, shared: SharedSlots, sleep: Sleep = asyncio.sleep) -> None:
        self._shared = shared
        self._sleep = sleep

    async def take(self, interval_s: float) -> None:
        wait = self._shared.reserve(interval_s)
        if wait > 0:
            await self._sleep(wait)

    def expected_wait(self) -> float:
        return self._shared.expected_wait()


class SharedPacing:
    """The server's shared slots, a ``SharedSlots`` per model; ``pacer`` makes a batch's."""

    def __init__(
        self,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        source: Callable[[str], SlotSource] | None = None,
    ) -> None:
        self._clock, self._sleep = clock, sleep
        self._source = source
        self._models: dict[str, SharedSlots] = {}
        self._lock = threading.Lock()

    @property
    def team(self) -> bool:
        """Whether the slots are the team's (Redis): each job then draws its own."""
        return self._source is not None

    def slots(self, model: str) -> SlotSource:
        if self._source is not None:
            return self._source(model)
        with self._lock:
            shared = self._models.setdefault(model, SharedSlots(self._clock))
        return ReservedSlots(shared, self._sleep)

    def pacer(self, model: str, rps: float) -> Pacer:
        """A new pacer (one batch's adaptive rate) over the model's shared slots."""
        return Pacer(rps, self.slots(model), clock=self._clock, sleep=self._sleep)
